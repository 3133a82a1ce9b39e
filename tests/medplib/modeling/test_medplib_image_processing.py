from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medplib.errors import UserInputError
from medplib.modeling.configuration import RegionEncoderConfig
from medplib.modeling.image_processing import (
    image_geometry,
    preprocess_clip,
    region_patch_weights,
    to_rgb_uint8,
)
from medplib.modeling.region_encoder import RegionEncoder

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def test_geometry_resizes_longest_side_and_centres():
    geo = image_geometry(100, 300, 336)
    assert geo.resized_hw == (112, 336)
    assert geo.offset_yx == (112, 0)
    assert image_geometry(1, 1, 336).resized_hw == (336, 336)
    assert image_geometry(8192, 1, 336).resized_hw == (336, 1)  # never 0 px wide


def test_clip_preprocessing_pads_with_mean_colour():
    img = np.full((10, 20, 3), 255, np.uint8)
    pixels, geo = preprocess_clip(img, 28, MEAN, STD)
    assert pixels.shape == (3, 28, 28)
    top = geo.offset_yx[0]
    assert torch.allclose(pixels[:, :top], torch.zeros(1))  # padding = mean → 0 after normalisation
    expected_white = (1.0 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(pixels[:, 14, 14], expected_white, atol=1e-6)


def test_official_pad_colour_is_the_truncated_clip_mean():
    from medplib.modeling.configuration import VisionTowerConfig
    from medplib.modeling.image_processing import pad_color_255

    v = VisionTowerConfig()
    assert v.pad_color == "mean"  # this project's models; converted checkpoints say "official"
    # 0.48145466 * 255 = 122.77, 0.4578275 * 255 = 116.75, 0.40821073 * 255 = 104.09.
    assert pad_color_255(v.image_mean, "official").tolist() == [122.0, 116.0, 104.0]
    img = np.full((10, 20, 3), 255, np.uint8)
    pixels, geo = preprocess_clip(img, 28, v.image_mean, v.image_std, "official")
    top = geo.offset_yx[0]
    expected = (torch.tensor([122.0, 116.0, 104.0]) / 255 - torch.tensor(v.image_mean)) / (
        torch.tensor(v.image_std)
    )  # about (-0.0113, -0.0112, -0.0013)
    torch.testing.assert_close(pixels[:, 0, 0], expected, rtol=0, atol=1e-6)
    assert torch.allclose(pixels[:, :top], expected[:, None, None], atol=1e-6)
    exact, _ = preprocess_clip(img, 28, v.image_mean, v.image_std)
    assert torch.allclose(exact[:, :top], torch.zeros(1), atol=1e-6)
    # The image itself is unchanged; only the padding differs.
    torch.testing.assert_close(pixels[:, top + 2], exact[:, top + 2])
    with pytest.raises(ValueError, match="pad_color"):
        VisionTowerConfig(pad_color="black")


def test_region_weights_square_identity_geometry():
    geo = image_geometry(28, 28, 28)  # no resize, 2 x 2 grid of 14-px patches
    mask = np.zeros((28, 28), bool)
    mask[0:7, 0:14] = True  # half of patch (0, 0)
    mask[14:28, 21:28] = True  # half of patch (1, 1)
    w = region_patch_weights(mask, geo, 14)
    np.testing.assert_allclose(w, [0.5, 0.0, 0.0, 0.5], atol=1e-6)


def test_region_weights_follow_padding_for_non_square_images():
    geo = image_geometry(14, 28, 28)  # resized as is, padded 7 rows on top and bottom
    full = np.ones((14, 28), bool)
    np.testing.assert_allclose(region_patch_weights(full, geo, 14), [0.5] * 4, atol=1e-6)
    left_top = np.zeros((14, 28), bool)
    left_top[:7, :14] = True  # lies in padded rows 7..14 → patch (0, 0) only
    np.testing.assert_allclose(region_patch_weights(left_top, geo, 14), [0.5, 0, 0, 0], atol=1e-6)


def test_region_weights_with_downscaling_match_area_fraction():
    geo = image_geometry(56, 56, 28)  # scale 0.5
    mask = np.zeros((56, 56), bool)
    mask[0:14, 0:28] = True  # → rows 0..7, cols 0..14 in model units: half of patch (0, 0)
    np.testing.assert_allclose(region_patch_weights(mask, geo, 14), [0.5, 0, 0, 0], atol=1e-6)


def test_tiny_regions_never_vanish():
    geo = image_geometry(1000, 1000, 28)
    mask = np.zeros((1000, 1000), bool)
    mask[999, 0] = True  # one pixel in the bottom-left corner
    w = region_patch_weights(mask, geo, 14)
    assert w[2] > 0 and np.count_nonzero(w) == 1
    assert w[2] == pytest.approx((28 / 1000) ** 2 / 14**2, rel=1e-6)


def test_large_image_region_weights_are_cheap_and_exact():
    geo = image_geometry(8192, 4096, 336)
    mask = np.zeros((8192, 4096), bool)
    mask[:4096] = True  # top half of the image
    w = region_patch_weights(mask, geo, 14).reshape(24, 24)
    # Image occupies 168 columns centred: cols 84..252 → patches 6..17, rows 0..168 → patches 0..11.
    assert w[:12, 6:18].min() == pytest.approx(1.0) and w[12:].max() == 0.0
    assert w[:, :6].max() == 0.0


def test_region_mask_shape_mismatch_is_user_error():
    with pytest.raises(UserInputError, match="same image"):
        region_patch_weights(np.ones((5, 5), bool), image_geometry(10, 10, 28), 14)


def test_region_encoder_pools_a_weighted_mean_of_adapted_patches():
    torch.manual_seed(0)
    enc = RegionEncoder(RegionEncoderConfig(in_features=6, out_features=5, max_sample_points=0))
    patches = torch.randn(4, 6)
    weights = torch.tensor([[0.5, 0.0, 0.0, 0.25], [0.0, 1.0, 0.0, 0.0]])
    got = enc(patches, weights)
    a = enc.adapter
    by_hand_0 = (0.5 * a(patches[0]) + 0.25 * a(patches[3])) / 0.75
    torch.testing.assert_close(got[0], by_hand_0)
    torch.testing.assert_close(got[1], a(patches[1]))


def test_region_encoder_keeps_highest_coverage_cells():
    enc = RegionEncoder(RegionEncoderConfig(in_features=3, out_features=2, max_sample_points=2))
    w = torch.tensor([[0.1, 0.9, 0.5, 0.0]])
    assert torch.equal(enc.limit_cells(w), torch.tensor([[0.0, 0.9, 0.5, 0.0]]))


@pytest.mark.parametrize(
    "image",
    [
        np.ones((5, 7), bool),
        np.arange(35, dtype=np.uint16).reshape(5, 7) * 1000,
        np.zeros((5, 7, 4), np.uint8),
        np.zeros((5, 7, 1), np.uint8),
        np.linspace(-1, 1, 35).reshape(5, 7),
        Image.new("CMYK", (7, 5), (0, 255, 0, 0)),
        Image.new("I;16", (7, 5), 300),
        Image.new("1", (7, 5), 1),
        Image.new("P", (7, 5), 3),
    ],
)
def test_images_in_any_mode_become_rgb_uint8(image):
    rgb = to_rgb_uint8(image)
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8


def test_mode_conversion_values():
    assert to_rgb_uint8(np.array([[True, False]]))[0, :, 0].tolist() == [255, 0]
    assert to_rgb_uint8(np.array([[0, 1000, 4000]], np.uint16))[0, :, 1].tolist() == [0, 64, 255]
    assert to_rgb_uint8(Image.new("CMYK", (1, 1), (0, 255, 0, 0)))[0, 0].tolist() == [255, 0, 255]


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((8193, 2, 3), np.uint8), "8192"),
        (np.zeros((0, 4), np.uint8), "empty"),
        (np.zeros((4, 4, 2), np.uint8), "shape"),
        (np.full((2, 2), np.nan), "NaN"),
        ("not an image", "numpy array"),
    ],
)
def test_bad_images_raise_user_errors(image, message):
    with pytest.raises(UserInputError, match=message):
        to_rgb_uint8(image)
