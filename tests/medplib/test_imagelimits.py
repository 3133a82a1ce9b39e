"""Sizes read from headers, and the limits that refuse an image before it is decoded."""

from __future__ import annotations

import io
import math
import struct

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medplib.errors import UserInputError
from medplib.imagelimits import (
    MAX_ASPECT_RATIO,
    MAX_IMAGE_SIDE_PX,
    PixelBudget,
    check_plane,
    check_volume,
    jpeg_size_px,
    max_aspect_ratio_for,
    nifti_header,
    nifti_plane_hw,
    png_size_px,
)
from medplib.modeling import image_processing
from medplib.modeling.presets import CLIP_TINY, CLIP_VIT_L_336


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_png_size_from_ihdr():
    assert png_size_px(_save(Image.new("I;16", (300, 7)), "PNG")) == (300, 7)
    assert png_size_px(_save(Image.new("RGB", (1, 2)), "PNG")[:24]) == (1, 2)
    assert png_size_px(_save(Image.new("RGB", (1, 2)), "PNG")[:23]) is None
    assert png_size_px(b"GIF89a" + b"\0" * 40) is None


@pytest.mark.parametrize(
    "kwargs", [{}, {"progressive": True}, {"exif": Image.Exif(), "quality": 50}]
)
def test_jpeg_size_from_start_of_frame(kwargs):
    image = Image.new("RGB", (123, 45), (1, 2, 3))
    data = _save(image, "JPEG", **kwargs)
    assert jpeg_size_px(data) == (123, 45)
    # With an APP1 segment ahead of the frame header, as cameras write it.
    exif = Image.Exif()
    exif[0x0112] = 6
    assert jpeg_size_px(_save(image, "JPEG", exif=exif)) == (123, 45)
    assert jpeg_size_px(data[:20]) is None  # cut before the frame header
    assert jpeg_size_px(b"\xff\xd8\xff\xda\x00\x08") is None  # scan with no frame header
    assert jpeg_size_px(b"\x89PNG") is None


def test_nifti_header_shape_dtype_and_ras_shape():
    array = np.zeros((4, 5, 6, 2), dtype=np.int16)
    # Voxel axes stored as (A, S, R): the RAS shape reorders them.
    affine = np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=float)
    data = nib.Nifti1Image(array, affine).to_bytes()
    header = nifti_header(data[:544])
    assert (header.shape, header.dtype, header.itemsize) == ((4, 5, 6, 2), "int16", 2)
    assert header.data_offset == 352 and header.voxels == 240 and header.data_bytes == 480
    assert header.ras_shape == (6, 4, 5)
    nifti2 = nib.Nifti2Image(np.zeros((3, 2), np.float64), np.eye(4)).to_bytes()
    header2 = nifti_header(nifti2[:544])
    assert (header2.shape, header2.dtype, header2.ras_shape) == ((3, 2), "float64", (3, 2, 1))
    with pytest.raises(UserInputError, match="NIfTI header could not be read"):
        nifti_header(b"\x5c\x01\x00\x00" + b"\0" * 100)


def test_nifti_plane_is_transposed_for_display():
    assert nifti_plane_hw((10, 20, 30), 2) == (20, 10)
    assert nifti_plane_hw((10, 20, 30), 0) == (30, 20)
    assert nifti_plane_hw((10, 20, 30), 1) == (30, 10)


def test_plane_limits_say_the_size_and_the_limit():
    budget = PixelBudget(max_plane_pixels=3000, max_side_px=100, max_aspect_ratio=4.0)
    check_plane("x", 40, 10, budget)  # exactly 4:1 is allowed
    with pytest.raises(UserInputError, match=r"^x is 41x10 pixels, an aspect ratio of 4.1:1;"):
        check_plane("x", 41, 10, budget)
    with pytest.raises(UserInputError, match=r"the model can use at most 4:1"):
        check_plane("x", 10, 41, budget)
    with pytest.raises(UserInputError, match=r"^x is 101x26 pixels; the model takes at most 100"):
        check_plane("x", 101, 26, budget)
    with pytest.raises(
        UserInputError, match=r"^x is 2100x2000 pixels \(4.2 megapixels\); the limit is 4.0 mega"
    ):
        check_plane("x", 2100, 2000, PixelBudget(max_plane_pixels=4_000_000))
    # A limit under 0.1 megapixels is said in pixels, not as "0.0 megapixels".
    with pytest.raises(
        UserInputError, match=r"^x is 60x55 pixels \(3,300 pixels\); the limit is 3,000 pixels,"
    ):
        check_plane("x", 60, 55, budget)
    with pytest.raises(UserInputError, match=r"has no pixels \(0x3\)"):
        check_plane("x", 0, 3, budget)
    with pytest.raises(
        UserInputError,
        match=r"^'a.png' is 1x100000 pixels, an aspect ratio of 100000:1; .* at most 24:1",
    ):
        check_plane("'a.png'", 1, 100000, PixelBudget())


def test_volume_limit_says_dims_dtype_and_limit():
    budget = PixelBudget(max_volume_voxels=512 * 512 * 512)
    check_volume("v", (512, 512, 512), "int16", 2, budget)
    with pytest.raises(
        UserInputError,
        match=r"^v holds 512x512x1024 int16 voxels \(268 million, 0.54 GB decoded\); "
        r"the limit is 134 million voxels",
    ):
        check_volume("v", (512, 512, 1024), "int16", 2, budget)


def test_limits_match_the_model():
    assert MAX_IMAGE_SIDE_PX == image_processing.MAX_IMAGE_SIDE_PX
    official = max_aspect_ratio_for(CLIP_VIT_L_336["image_size"], CLIP_VIT_L_336["patch_size"])
    assert official == MAX_ASPECT_RATIO == 24.0
    assert max_aspect_ratio_for(CLIP_TINY["image_size"], CLIP_TINY["patch_size"]) == 8.0
    # Every image within the default budget fits the model's input checks.
    budget = PixelBudget()
    assert budget.max_side_px <= image_processing.MAX_IMAGE_SIDE_PX
    longest = image_processing.MAX_IMAGE_SIDE_PX
    shortest = math.ceil(longest / budget.max_aspect_ratio)
    check_plane("x", longest, shortest, budget)
    image_processing.to_rgb_uint8(np.zeros((shortest, longest, 3), np.uint8))


def test_jpeg_declaring_a_huge_frame_is_refused_from_its_header():
    from medplib.imageio import load_image

    data = bytearray(_save(Image.new("L", (8, 8)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 9000, 9000)  # height, width
    with pytest.raises(UserInputError, match=r"is 9000x9000 pixels \(81.0 megapixels\)"):
        load_image(bytes(data))
