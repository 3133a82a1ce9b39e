"""Pure mask helpers for evaluation: union, contour, overlay drawing and PNG/base64 encoding.

Masks are bool (H, W); images are (H, W, 3) uint8 RGB. Nothing here reads or writes files.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from medplib.masks import resize_mask_nearest

TARGET_RGB = (0, 230, 64)  # green contour: the reference mask
PREDICTION_RGB = (255, 64, 32)  # red-orange fill: the predicted mask
PREDICTION_ALPHA = 0.45  # fill opacity; the anatomy must stay visible under it
DISPLAY_SIDE_PX = 192  # overlays are scaled so their longer side is about this many pixels


def union_masks(masks: Sequence[np.ndarray], shape_hw: tuple[int, int]) -> np.ndarray:
    """Pixel-wise OR of equally shaped masks; an all-False (H, W) mask when `masks` is empty."""
    out = np.zeros(tuple(shape_hw), dtype=bool)
    for i, mask in enumerate(masks):
        m = np.asarray(mask, dtype=bool)
        if m.shape != out.shape:
            raise ValueError(f"Mask {i} has shape {m.shape}; expected {out.shape}.")
        out |= m
    return out


def mask_contour(mask: np.ndarray) -> np.ndarray:
    """Inner boundary: foreground pixels with a 4-neighbour in the background or off the image."""
    m = np.asarray(mask, dtype=bool)
    padded = np.pad(m, 1, constant_values=False)  # (H+2, W+2): the image border counts as outside
    interior = (
        padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & m
    )  # (H, W)
    return m & ~interior


def display_scale(shape_hw: tuple[int, int], side_px: int = DISPLAY_SIDE_PX) -> tuple[int, int]:
    """(H, W) for display: longer side near `side_px`, an integer up-scale for small images."""
    h, w = (int(v) for v in shape_hw)
    longest = max(h, w)
    if longest < side_px:
        factor = max(1, side_px // longest)  # integer factor keeps pixels square and crisp
        return h * factor, w * factor
    return max(1, round(h * side_px / longest)), max(1, round(w * side_px / longest))


def _checked_rgb(
    image: np.ndarray, *, target: np.ndarray | None, prediction: np.ndarray | None
) -> np.ndarray:
    """(H, W, 3) RGB of a grey or RGB image; each mask given must be (H, W)."""
    rgb = np.asarray(image)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"The image must be (H, W, 3) RGB; got shape {rgb.shape}.")
    hw = rgb.shape[:2]
    for name, m in (("target", target), ("prediction", prediction)):
        if m is not None and np.asarray(m).shape != hw:
            raise ValueError(f"The {name} mask has shape {np.asarray(m).shape}; the image is {hw}.")
    return rgb


def overlay_rgb(
    image: np.ndarray,
    target: np.ndarray | None,
    prediction: np.ndarray | None,
    *,
    side_px: int | None = DISPLAY_SIDE_PX,
) -> np.ndarray:
    """Image with the prediction filled (red-orange) and the target outlined (green).

    The contour is drawn after resizing, so it stays one display pixel wide. `side_px` None
    keeps the original size. Returns (H', W', 3) uint8.
    """
    rgb = _checked_rgb(image, target=target, prediction=prediction)
    hw = rgb.shape[:2]
    out_hw = display_scale(hw, side_px) if side_px else hw
    if out_hw != hw:
        resized = Image.fromarray(rgb.astype(np.uint8)).resize(
            (out_hw[1], out_hw[0]), Image.Resampling.NEAREST
        )
        canvas = np.asarray(resized, dtype=np.float64)  # (H', W', 3)
    else:
        canvas = rgb.astype(np.float64)
    if prediction is not None:
        fill = resize_mask_nearest(prediction, out_hw)
        colour = np.asarray(PREDICTION_RGB, dtype=np.float64)
        canvas[fill] = (1 - PREDICTION_ALPHA) * canvas[fill] + PREDICTION_ALPHA * colour
    if target is not None:
        edge = mask_contour(resize_mask_nearest(target, out_hw))
        canvas[edge] = TARGET_RGB
    return np.clip(np.round(canvas), 0, 255).astype(np.uint8)


def contours_rgb(
    image: np.ndarray,
    target: np.ndarray,
    prediction: np.ndarray,
    *,
    side_px: int = DISPLAY_SIDE_PX,
) -> np.ndarray:
    """Image with both outlines: reference green, prediction red-orange, where they meet green.

    Outlines only, so the anatomy under a large mask stays visible. Returns (H', W', 3) uint8
    with the longer side near `side_px` (`display_scale`).
    """
    rgb = _checked_rgb(image, target=target, prediction=prediction)
    out_hw = display_scale(rgb.shape[:2], side_px)
    canvas = np.array(
        Image.fromarray(rgb.astype(np.uint8)).resize(
            (out_hw[1], out_hw[0]), Image.Resampling.BILINEAR
        )
    )  # (H', W', 3)
    canvas[mask_contour(resize_mask_nearest(prediction, out_hw))] = PREDICTION_RGB
    canvas[mask_contour(resize_mask_nearest(target, out_hw))] = TARGET_RGB
    return canvas


def png_base64(rgb: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URI of an (H, W, 3) uint8 image, for self-contained HTML."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
