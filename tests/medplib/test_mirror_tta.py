import numpy as np
import pytest
import torch

from medplib.mirror_tta import (
    mask_agreement,
    merge_mirrored,
    mirror_clip_input,
    mirror_sam_input,
    unmirror,
)
from medplib.modeling import build_config
from medplib.modeling.batching import clip_and_sam_inputs


def _cols(width: int, cols: slice, p: float, h: int = 4) -> torch.Tensor:
    out = torch.zeros(h, width)
    out[:, cols] = p
    return out


def test_unmirror_puts_mirror_column_x_back_at_w_minus_1_minus_x():
    m = torch.arange(6.0).reshape(1, 6)
    assert unmirror(m).tolist() == [[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]]
    assert torch.equal(unmirror(unmirror(m)), m)


def test_mask_agreement_is_dice_and_two_empty_masks_agree():
    a = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)
    b = torch.tensor([[0, 1, 1, 0]], dtype=torch.bool)
    assert mask_agreement(a, b) == pytest.approx(0.5)  # 2 * 1 / (2 + 2)
    assert mask_agreement(a, a) == 1.0
    empty = torch.zeros(1, 4, dtype=torch.bool)
    assert mask_agreement(empty, empty) == 1.0
    assert mask_agreement(a, empty) == 0.0


def test_a_mirror_that_confirms_the_mask_is_averaged_in():
    prob = _cols(8, slice(0, 3), 0.6)  # columns 0-2
    on_mirror = _cols(8, slice(5, 8), 0.9)  # columns 5-7 of the mirror are columns 2-0
    merged, agreement, used = merge_mirrored(prob, on_mirror, threshold=0.5, min_agreement=0.7)
    assert used and agreement == 1.0
    assert torch.allclose(merged[:, :3], torch.full((4, 3), 0.75))
    assert torch.equal(merged[:, 3:], torch.zeros(4, 5))


def test_a_mirror_that_points_to_the_other_side_leaves_the_mask_alone():
    prob = _cols(8, slice(0, 3), 0.6)
    on_mirror = _cols(8, slice(0, 3), 0.9)  # the same columns on the mirror: the other side
    merged, agreement, used = merge_mirrored(prob, on_mirror, threshold=0.5, min_agreement=0.7)
    assert not used and agreement == 0.0
    assert merged is prob


def test_agreement_is_measured_at_the_given_threshold_against_the_gate():
    prob = _cols(10, slice(0, 4), 0.6)
    on_mirror = _cols(10, slice(7, 10), 0.9) + _cols(10, slice(6, 7), 0.3)
    # at 0.5 the mirror covers 3 of the 4 columns: Dice 6 / 7
    _, agreement, used = merge_mirrored(prob, on_mirror, threshold=0.5, min_agreement=0.86)
    assert agreement == pytest.approx(6 / 7) and not used
    # at 0.2 it covers all 4
    _, agreement, used = merge_mirrored(prob, on_mirror, threshold=0.2, min_agreement=0.86)
    assert agreement == 1.0 and used


def test_by_default_masks_are_compared_where_the_logit_changes_sign():
    prob = _cols(10, slice(0, 4), 0.6)
    on_mirror = _cols(10, slice(6, 10), 0.4)  # the same place, but under 0.5
    _, agreement, used = merge_mirrored(prob, on_mirror, min_agreement=0.5)
    assert agreement == 0.0 and not used


def test_maps_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        merge_mirrored(torch.zeros(4, 5), torch.zeros(4, 6), threshold=0.5, min_agreement=0.5)


def _sam_input(image: np.ndarray, config) -> tuple[torch.Tensor, tuple[int, int]]:
    _, _, sam, resized_hw = clip_and_sam_inputs(image, config)
    return sam, resized_hw


@pytest.mark.parametrize("hw", [(300, 500), (90, 40), (64, 64)])
def test_the_mirrored_sam_input_is_that_of_the_mirrored_image(hw):
    """Mirrored from the preprocessed input, so an upload is resized once, yet the same pixels
    as preprocessing the mirrored image; the centred padding (odd for 90 x 40) stays put."""
    config = build_config("tiny")
    image = np.random.default_rng(1).integers(0, 256, (*hw, 3), dtype=np.uint8)
    plain, plain_hw = _sam_input(image, config)
    got, got_hw = mirror_sam_input(plain, plain_hw), plain_hw
    want, want_hw = _sam_input(np.ascontiguousarray(image[:, ::-1]), config)
    assert got_hw == want_hw and torch.equal(got, want)
    assert not torch.equal(got, plain)


@pytest.mark.parametrize("hw", [(300, 2), (600, 4), (2000, 1)])
def test_an_image_one_column_wide_after_the_resize_is_its_own_mirror(hw):
    """A 300 x 2 upload shrinks to one column (a reversed numpy view of it has a negative
    stride that numpy still calls contiguous and torch refuses; the tensor is flipped instead)."""
    config = build_config("tiny")
    image = np.random.default_rng(2).integers(0, 256, (*hw, 3), dtype=np.uint8)
    plain, plain_hw = _sam_input(image, config)
    got, got_hw = mirror_sam_input(plain, plain_hw), plain_hw
    assert got_hw == plain_hw and got_hw[1] == 1
    assert torch.equal(got, plain)


@pytest.mark.parametrize("hw", [(300, 500), (90, 41), (64, 64), (7, 300)])
def test_the_mirrored_clip_input_is_that_of_the_mirrored_image(hw):
    """The left/right check reads the mirrored image through CLIP: the image region of the
    preprocessed input flipped in place is what preprocessing the mirror gives."""
    config = build_config("tiny")
    image = np.random.default_rng(3).integers(0, 256, (*hw, 3), dtype=np.uint8)
    plain, geometry, _, _ = clip_and_sam_inputs(image, config)
    want, want_geometry, _, _ = clip_and_sam_inputs(np.ascontiguousarray(image[:, ::-1]), config)
    got = mirror_clip_input(plain, geometry)
    assert want_geometry == geometry
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, plain)
