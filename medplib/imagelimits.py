"""Image sizes read from file headers, and the limits checked before any pixel is decoded.

Decoding is what costs memory: a 0.5 MB .nii.gz of zeros can declare a 512x512x1024 volume,
a 130 kB PNG an 8192x8192 16-bit image. So sizes come from the headers alone (pure functions
on bytes), and `check_plane` / `check_volume` refuse a file with one sentence that states the
size and the limit before an array is allocated.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
from typing import Any

from medplib.errors import UserInputError

# The model refuses larger inputs (medplib.modeling.image_processing): full-size region masks
# and output masks grow as H x W.
MAX_IMAGE_SIDE_PX = 8192
# CLIP ViT-L/14 at 336 px sees a 24 x 24 patch grid; a longer-and-thinner image shrinks to
# less than one patch row, so the language model sees padding where the image should be.
CLIP_INPUT_SIDE_PX = 336
CLIP_PATCH_SIDE_PX = 14


def max_aspect_ratio_for(input_side_px: int, patch_side_px: int) -> float:
    """Longest/shortest side ratio at which the short side still spans one whole patch."""
    return input_side_px / patch_side_px


MAX_ASPECT_RATIO = max_aspect_ratio_for(CLIP_INPUT_SIDE_PX, CLIP_PATCH_SIDE_PX)  # 24.0


@dataclass(frozen=True)
class PixelBudget:
    """What one upload may decode to."""

    max_plane_pixels: int = 8192 * 8192  # one 2-D image, slice or frame
    max_volume_voxels: int = 512 * 512 * 1024  # every voxel a volume or multi-frame file holds
    max_side_px: int = MAX_IMAGE_SIDE_PX
    max_aspect_ratio: float = MAX_ASPECT_RATIO


def png_size_px(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the PNG IHDR chunk, or None when there is no readable IHDR."""
    if len(data) < 24 or not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_NO_LENGTH = {0x01, *range(0xD0, 0xD9)}  # TEM, RSTn, SOI, EOI have no length field


def jpeg_size_px(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first JPEG start-of-frame segment, or None when not found.

    A height of 0 (size given later by a DNL segment) also gives None: the decoder decides.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_NO_LENGTH:
            pos += 2
            continue
        if marker == 0xDA:  # start of scan: no frame header came before it
            return None
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return (int(width), int(height)) if height else None
        if length < 2:
            return None
        pos += 2 + length
    return None


@dataclass(frozen=True)
class NiftiHeader:
    """What a NIfTI header declares, read without touching the voxel data."""

    shape: tuple[int, ...]  # as stored, voxel axes first
    dtype: str  # numpy name, e.g. "int16"
    itemsize: int  # bytes per voxel
    data_offset: int  # bytes before the voxel data
    ras_shape: tuple[int, ...] | None  # first three axes reordered to R, A, S; None if unknown

    @property
    def voxels(self) -> int:
        return math.prod(self.shape)

    @property
    def data_bytes(self) -> int:
        return self.voxels * self.itemsize


def nifti_header(head: bytes) -> NiftiHeader:
    """Parse the (decompressed) first bytes of a NIfTI-1 or NIfTI-2 file.

    Raises UserInputError when the header cannot be read.
    """
    import nibabel as nib

    nifti2 = len(head) >= 4 and 540 in (
        int.from_bytes(head[:4], "little"),
        int.from_bytes(head[:4], "big"),
    )
    header_class: Any = nib.Nifti2Header if nifti2 else nib.Nifti1Header
    try:
        header = header_class.from_fileobj(io.BytesIO(head))
        shape = tuple(int(v) for v in header.get_data_shape())
        dtype = header.get_data_dtype()
        offset = int(header.get_data_offset())
    except Exception as error:
        raise UserInputError(f"The NIfTI header could not be read ({error}).") from None
    return NiftiHeader(
        shape=shape,
        dtype=str(dtype),
        itemsize=int(dtype.itemsize),
        data_offset=offset,
        ras_shape=_ras_shape(header, shape),
    )


def _ras_shape(header: Any, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    import nibabel as nib

    if len(shape) < 2:
        return None
    spatial = (*shape[:3], *(1,) * (3 - len(shape[:3])))  # 2-D data is one slice thick
    try:
        orientation = nib.orientations.io_orientation(header.get_best_affine())
    except Exception:
        return spatial  # load_volume then keeps the voxel order too
    if len(orientation) != 3 or any(math.isnan(v) for v in orientation[:, 0]):
        return spatial
    out = [0, 0, 0]
    for axis, (target, _flip) in enumerate(orientation):
        out[int(target)] = spatial[axis]
    return tuple(out)


def nifti_plane_hw(ras_shape: tuple[int, ...], axis: int) -> tuple[int, int]:
    """(height, width) of a slice across RAS ``axis`` as `imageio.slice_volume` shows it."""
    rest = [n for a, n in enumerate(ras_shape[:3]) if a != axis]
    return rest[1], rest[0]  # the slice is transposed for display


def check_plane(subject: str, width_px: int, height_px: int, budget: PixelBudget) -> None:
    """Refuse a 2-D image the budget or the model cannot take; the sentence says why."""
    if width_px < 1 or height_px < 1:
        raise UserInputError(f"{subject} has no pixels ({width_px}x{height_px}).")
    pixels = width_px * height_px
    if pixels > budget.max_plane_pixels:
        limit = budget.max_plane_pixels
        if limit < 100_000:  # in megapixels a small limit would read "0.0"
            size, limit_text = f"{pixels:,} pixels", f"{limit:,} pixels"
        else:
            size, limit_text = f"{pixels / 1e6:.1f} megapixels", f"{limit / 1e6:.1f} megapixels"
        raise UserInputError(
            f"{subject} is {width_px}x{height_px} pixels ({size}); "
            f"the limit is {limit_text}, so downscale it first."
        )
    longest, shortest = max(width_px, height_px), min(width_px, height_px)
    ratio = longest / shortest
    if ratio > budget.max_aspect_ratio:
        shown = f"{ratio:.0f}" if ratio >= 100 else f"{ratio:.1f}"
        raise UserInputError(
            f"{subject} is {width_px}x{height_px} pixels, an aspect ratio of {shown}:1; "
            f"the model can use at most {budget.max_aspect_ratio:g}:1, so crop it into "
            "squarer parts."
        )
    if longest > budget.max_side_px:
        raise UserInputError(
            f"{subject} is {width_px}x{height_px} pixels; the model takes at most "
            f"{budget.max_side_px} pixels on a side, so downscale or crop it first."
        )


def check_volume(
    subject: str, shape: tuple[int, ...], dtype: str, itemsize: int, budget: PixelBudget
) -> None:
    """Refuse a volume or multi-frame file that holds more voxels than the budget."""
    voxels = math.prod(shape)
    if voxels > budget.max_volume_voxels:
        dims = "x".join(str(n) for n in shape)
        raise UserInputError(
            f"{subject} holds {dims} {dtype} voxels ({voxels / 1e6:.0f} million, "
            f"{voxels * itemsize / 1e9:.2f} GB decoded); the limit is "
            f"{budget.max_volume_voxels / 1e6:.0f} million voxels, so upload fewer slices."
        )
