"""Image and region preprocessing for the CLIP branch: pure functions on numpy arrays.

Geometry (shared with region masks): resize so the longest side equals the CLIP input size,
then centre-pad to a square. Region masks are mapped with exactly that geometry onto the patch
grid, in one of two ways (`RegionEncoderConfig.pooling`):

- "area" (this project's models): *area coverage*, the fraction of each patch covered by the
  region (`region_patch_weights`);
- "official" (converted MedPLIB checkpoints): the released model's reduction, the resized
  mask's value at each patch's top-left pixel (`region_cells_official`); the region encoder
  turns those cells into bilinear sample weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from medplib.errors import UserInputError

MAX_IMAGE_SIDE_PX = 8192  # larger inputs are rejected: memory for masks at full size grows as H*W


@dataclass(frozen=True)
class ImageGeometry:
    """Where the original image sits inside the padded square model input."""

    original_hw: tuple[int, int]  # (H, W) in original pixels
    resized_hw: tuple[int, int]  # (h, w) after resizing the longest side to `size`
    size: int  # side of the padded square
    offset_yx: tuple[int, int]  # top-left of the resized image inside the square


def resize_longest_side_hw(h: int, w: int, size: int) -> tuple[int, int]:
    """Output size when the longest side becomes `size` (SAM's rounding; never below 1 px)."""
    scale = size / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def image_geometry(h: int, w: int, size: int) -> ImageGeometry:
    rh, rw = resize_longest_side_hw(h, w, size)
    return ImageGeometry((h, w), (rh, rw), size, ((size - rh) // 2, (size - rw) // 2))


def to_rgb_uint8(image) -> np.ndarray:
    """Convert a PIL image or an array in any common mode to (H, W, 3) uint8 RGB.

    Accepts bool (1-bit), uint8 / uint16 / int / float grayscale (H, W) or (H, W, 1),
    (H, W, 3) RGB, (H, W, 4) RGBA (alpha dropped) and PIL images of any mode (CMYK, P, I;16 …).
    Non-uint8 intensities are min-max scaled to 0–255, as a viewer's full window would show them.
    """
    if isinstance(image, Image.Image):
        if image.mode in ("RGB", "L"):
            arr = np.asarray(image)
        elif image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            arr = np.asarray(image).astype(np.float64)
        elif image.mode == "1":
            arr = np.asarray(image).astype(bool)
        else:
            arr = np.asarray(image.convert("RGB"))
    elif isinstance(image, np.ndarray):
        arr = image
    elif isinstance(image, torch.Tensor):
        arr = image.detach().cpu().numpy()
    else:
        raise UserInputError(
            f"The image must be a numpy array or a PIL image, not {type(image).__name__}."
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise UserInputError(
            f"The image has shape {tuple(arr.shape)}; give a 2-D grayscale (H, W) or a colour (H, W, 3|4) image."
        )
    h, w = arr.shape[:2]
    if h < 1 or w < 1:
        raise UserInputError(
            f"The image is empty ({h}x{w} pixels); give an image of at least 1x1 pixels."
        )
    if max(h, w) > MAX_IMAGE_SIDE_PX:
        raise UserInputError(
            f"The image is {w}x{h} pixels; resize it so neither side exceeds {MAX_IMAGE_SIDE_PX} pixels."
        )
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.number):
            raise UserInputError(
                f"The image has pixel type {arr.dtype}; give numeric pixel values."
            )
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise UserInputError(
                "The image contains NaN or infinite values; replace them before upload."
            )
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr)


def pad_color_255(mean: tuple[float, float, float], pad_color: str) -> np.ndarray:
    """(3,) float32 padding colour in 0–255 units for `VisionTowerConfig.pad_color`.

    "mean": the exact mean colour, 0 after normalisation (this project's models).
    "official": the mean x 255 truncated to integers, as the released MedPLIB pipeline pads
    (122, 116, 104 for CLIP), i.e. about -0.01 after normalisation (converted checkpoints).
    """
    mean_255 = np.asarray(mean, dtype=np.float64) * 255.0
    if pad_color == "official":
        return np.trunc(mean_255).astype(np.float32)
    if pad_color == "mean":
        return mean_255.astype(np.float32)
    raise ValueError(f"pad_color must be 'mean' or 'official', not {pad_color!r}")


def preprocess_clip(
    image_rgb: np.ndarray,
    size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    pad_color: str = "mean",
) -> tuple[torch.Tensor, ImageGeometry]:
    """(H, W, 3) uint8 → normalised (3, size, size) float32 and its geometry.

    Bilinear resize of the longest side, centre pad, then CLIP normalisation. The padding
    colour is `pad_color_255(mean, pad_color)`: the exact mean (padding is 0 after
    normalisation) for this project's models, the integer-truncated mean for converted
    official checkpoints, which is what the released pipeline feeds CLIP.
    """
    h, w = image_rgb.shape[:2]
    geo = image_geometry(h, w, size)
    rh, rw = geo.resized_hw
    resized = np.asarray(Image.fromarray(image_rgb).resize((rw, rh), Image.Resampling.BILINEAR))
    canvas = np.empty((size, size, 3), dtype=np.float32)
    canvas[:] = pad_color_255(mean, pad_color)
    top, left = geo.offset_yx
    canvas[top : top + rh, left : left + rw] = resized
    pixels = (canvas / 255.0 - np.asarray(mean, dtype=np.float32)) / np.asarray(
        std, dtype=np.float32
    )
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy()), geo


def _axis_overlap(n_px: int, resized: int, offset: int, patch: int, grid: int) -> np.ndarray:
    """(grid, n_px): length of original pixel r (mapped to model-input units) inside cell i."""
    scale = resized / n_px
    px_lo = offset + np.arange(n_px, dtype=np.float64) * scale  # (n,)
    px_hi = px_lo + scale
    cell_lo = np.arange(grid, dtype=np.float64)[:, None] * patch  # (g, 1)
    cell_hi = cell_lo + patch
    return np.clip(np.minimum(px_hi[None], cell_hi) - np.maximum(px_lo[None], cell_lo), 0.0, None)


def region_patch_weights(mask: np.ndarray, geometry: ImageGeometry, patch_size: int) -> np.ndarray:
    """Fraction of each CLIP patch covered by the region, as (grid * grid,) float32 in [0, 1].

    Exact area coverage: each original pixel is the rectangle it becomes after the resize, so
    this equals average-pooling an infinitely fine resize of the padded mask onto the patch grid.
    Any non-empty region gets non-zero weight on every cell it touches, however small it is.
    """
    h, w = geometry.original_hw
    if mask.shape != (h, w):
        raise UserInputError(
            f"A region mask has shape {tuple(mask.shape)} but the image is {h}x{w}; draw regions on the same image."
        )
    grid = geometry.size // patch_size
    wy = _axis_overlap(h, geometry.resized_hw[0], geometry.offset_yx[0], patch_size, grid)  # (g, H)
    wx = _axis_overlap(w, geometry.resized_hw[1], geometry.offset_yx[1], patch_size, grid)  # (g, W)
    m = mask.astype(bool)
    cover = np.zeros((grid, grid), dtype=np.float64)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size:
        step = 1024  # bounds the float copy of the mask for 8192-px images
        for start in range(int(rows[0]), int(rows[-1]) + 1, step):
            block = m[start : start + step].astype(np.float32)  # (b, W)
            cover += wy[:, start : start + step] @ (block @ wx.T)  # (g, b) @ (b, g)
    return (cover / float(patch_size * patch_size)).astype(np.float32).reshape(-1)


def region_cells_official(mask: np.ndarray, geometry: ImageGeometry, patch_size: int) -> np.ndarray:
    """The released model's reduction of a region to the patch grid: (grid * grid,) float32 0/1.

    As the released pipeline does: the 0/1 mask is resized like the image (PIL bilinear, so
    each output pixel is the rounded, antialiased mean of the 0/1 input), centre-padded with
    zeros, and each cell takes the value of its top-left pixel (nearest neighbour x 1/patch).
    A region can vanish in that resize or miss every top-left pixel; the released code then
    averages no points and feeds the LLM a zero vector. Here such a region falls back to the
    cell(s) it covers most, so a small point prompt still refers to its place.
    """
    h, w = geometry.original_hw
    if mask.shape != (h, w):
        raise UserInputError(
            f"A region mask has shape {tuple(mask.shape)} but the image is {h}x{w}; draw regions on the same image."
        )
    m = mask.astype(bool)
    rh, rw = geometry.resized_hw
    small = np.asarray(
        Image.fromarray(m.astype(np.uint8)).resize((rw, rh), Image.Resampling.BILINEAR)
    )  # (rh, rw) uint8 0/1
    grid = geometry.size // patch_size
    top_left = np.arange(grid) * patch_size  # model-input pixel of each cell's corner
    ys, xs = top_left - geometry.offset_yx[0], top_left - geometry.offset_yx[1]
    rows, cols = (ys >= 0) & (ys < rh), (xs >= 0) & (xs < rw)  # cells outside the padding
    cells = np.zeros((grid, grid), dtype=bool)  # (g, g) row-major, like the patch tokens
    cells[np.ix_(rows, cols)] = small[np.ix_(ys[rows], xs[cols])] > 0
    if not cells.any() and m.any():
        cover = region_patch_weights(m, geometry, patch_size).reshape(grid, grid)
        cells = cover >= cover.max()
    return cells.astype(np.float32).reshape(-1)


def region_grid_weights(
    mask: np.ndarray, geometry: ImageGeometry, patch_size: int, pooling: str
) -> np.ndarray:
    """(grid * grid,) float32 weights of a region for `RegionEncoderConfig.pooling`:
    area coverage ("area") or the official top-left-pixel cells ("official")."""
    if pooling == "official":
        return region_cells_official(mask, geometry, patch_size)
    if pooling == "area":
        return region_patch_weights(mask, geometry, patch_size)
    raise ValueError(f"region pooling must be 'area' or 'official', not {pooling!r}")
