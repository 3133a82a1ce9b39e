"""Region-prompt geometry: validating region prompts and turning them into masks.

MedPLIB reads a region (the thing between ``<region>`` and ``</region>``) as a binary mask at the
original image size; points and boxes are converted to masks before the model sees them. All
functions here are pure. Coordinates are in original-image pixels (``_px``), x to the right and
y down, with the top-left corner of the image at (0, 0) and pixel (col, row) covering the square
``[col, col + 1) x [row, row + 1)`` (so its centre is at ``(col + 0.5, row + 0.5)``).

The square-pad helpers at the end describe how an image of any aspect ratio is scaled so its
longest side equals ``target`` and then centred on a ``target x target`` square.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medplib.errors import UserInputError
from medplib.masks import decode_rle, encode_rle

MAX_REGIONS = 32  # far above what a question can refer to; bounds the work per request
POINT_HALF_SIZE_MIN_PX = 20  # MedPLIB's demo turns a click into a 41x41 px square (+-20 px)
POINT_HALF_SIZE_DIVISOR = 48  # max(h, w) / 48: at least about one 24x24 CLIP patch at any size


@dataclass(frozen=True)
class PointPrompt:
    """A clicked point ``(x, y)`` in original-image pixels."""

    xy_px: tuple[float, float]


@dataclass(frozen=True)
class BoxPrompt:
    """A box ``(x0, y0, x1, y1)`` in original-image pixels; corners may come in any order."""

    xyxy_px: tuple[float, float, float, float]


@dataclass(frozen=True, eq=False)
class MaskPrompt:
    """A free-form region: a bool (H, W) mask at the original image size."""

    mask: np.ndarray


RegionPrompt = PointPrompt | BoxPrompt | MaskPrompt


def _label(index: int | None) -> str:
    return f"Region {index + 1}: " if index is not None else ""


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def point_half_size_px(height_px: int, width_px: int) -> int:
    """Half-size of the square a point prompt becomes: ``max(20, round(max(h, w) / 48))``."""
    return max(POINT_HALF_SIZE_MIN_PX, math.floor(max(height_px, width_px) / 48 + 0.5))


def _box_pixel_span(lo: float, hi: float, size: int) -> tuple[int, int]:
    """Half-open pixel range whose centres lie in [lo, hi), clipped; at least one pixel."""
    start = math.ceil(lo - 0.5)
    stop = math.ceil(hi - 0.5)
    if stop <= start:  # thinner than a pixel: keep the pixel holding the box's middle
        start = math.floor((lo + hi) / 2)
        stop = start + 1
    start, stop = max(0, start), min(size, stop)
    if stop <= start:  # the middle pixel fell just outside after clipping
        start = min(max(0, start), size - 1)
        stop = start + 1
    return start, stop


def prompt_to_mask(prompt: RegionPrompt, *, height_px: int, width_px: int) -> np.ndarray:
    """Rasterise a validated prompt to a bool (height_px, width_px) mask.

    - Point: a filled square centred on the pixel holding the point (a point on the right or
      bottom edge belongs to the last column/row), half-size `point_half_size_px` (side
      ``2 * half + 1``), clipped to the image.
    - Box: the pixels whose centres lie in ``[x0, x1) x [y0, y1)`` after clipping to the
      image; a box thinner than one pixel in either direction still covers the one pixel that
      holds its middle.
    - Mask: a bool copy.
    """
    validate_prompt(prompt, height_px=height_px, width_px=width_px)
    mask = np.zeros((height_px, width_px), dtype=bool)
    if isinstance(prompt, PointPrompt):
        half = point_half_size_px(height_px, width_px)
        col = min(int(math.floor(prompt.xy_px[0])), width_px - 1)
        row = min(int(math.floor(prompt.xy_px[1])), height_px - 1)
        mask[max(0, row - half) : row + half + 1, max(0, col - half) : col + half + 1] = True
    elif isinstance(prompt, BoxPrompt):
        x0, y0, x1, y1 = _ordered_box(prompt.xyxy_px)
        c0, c1 = _box_pixel_span(x0, x1, width_px)
        r0, r1 = _box_pixel_span(y0, y1, height_px)
        mask[r0:r1, c0:c1] = True
    else:
        mask[:] = np.asarray(prompt.mask, dtype=bool)
    return mask


def _ordered_box(xyxy: Sequence[float]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in xyxy)
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def validate_prompt(
    prompt: RegionPrompt, *, height_px: int, width_px: int, index: int | None = None
) -> None:
    """Raise UserInputError with an actionable sentence if a prompt cannot become a region.

    ``index`` is the prompt's 0-based position in a list; messages number regions from 1.
    Points must lie inside the image (edges included); boxes need a non-zero width and height
    and must overlap the image (a box partly outside is fine: it is clipped); masks must be
    2-D, of the image's shape and non-empty.
    """
    where = _label(index)
    if height_px < 1 or width_px < 1:
        raise UserInputError(f"The image size {width_px}x{height_px} px has no pixels.")
    if isinstance(prompt, PointPrompt):
        xy = prompt.xy_px
        if len(xy) != 2 or not all(_is_number(v) and math.isfinite(v) for v in xy):
            raise UserInputError(f"{where}the point {xy!r} is not two finite numbers (x, y).")
        x, y = float(xy[0]), float(xy[1])
        if not (0 <= x <= width_px and 0 <= y <= height_px):
            raise UserInputError(
                f"{where}the point {_fmt((x, y))} lies outside the {width_px}x{height_px} px "
                "image; click inside the image."
            )
    elif isinstance(prompt, BoxPrompt):
        xyxy = prompt.xyxy_px
        if len(xyxy) != 4 or not all(_is_number(v) and math.isfinite(v) for v in xyxy):
            raise UserInputError(
                f"{where}the box {xyxy!r} is not four finite numbers (x0, y0, x1, y1)."
            )
        x0, y0, x1, y1 = _ordered_box(xyxy)
        shown = _fmt(tuple(float(v) for v in xyxy))
        if x1 == x0:
            raise UserInputError(
                f"{where}the box {shown} has zero width; draw a box with some area."
            )
        if y1 == y0:
            raise UserInputError(
                f"{where}the box {shown} has zero height; draw a box with some area."
            )
        if min(x1, width_px) <= max(x0, 0) or min(y1, height_px) <= max(y0, 0):
            raise UserInputError(
                f"{where}the box {shown} lies outside the {width_px}x{height_px} px image; "
                "draw it on the image."
            )
    elif isinstance(prompt, MaskPrompt):
        mask = np.asarray(prompt.mask)
        if mask.shape != (height_px, width_px):
            raise UserInputError(
                f"{where}the mask is {_shape_text(mask.shape)} but the image is "
                f"{width_px}x{height_px} px; draw the region on this image."
            )
        if not np.any(mask):
            raise UserInputError(f"{where}the mask is empty; paint the region you mean.")
    else:
        raise UserInputError(f"{where}unknown region type {type(prompt).__name__}.")


def _shape_text(shape: tuple[int, ...]) -> str:
    if len(shape) == 2:
        return f"{shape[1]}x{shape[0]} px"
    return f"an array of shape {shape}"


def prompts_to_document(prompts: Sequence[RegionPrompt]) -> list[dict]:
    """Serialise prompts to a JSON-ready geometry document (see `document_to_prompts`)."""
    document: list[dict] = []
    for prompt in prompts:
        if isinstance(prompt, PointPrompt):
            document.append({"kind": "point", "xy_px": [float(v) for v in prompt.xy_px]})
        elif isinstance(prompt, BoxPrompt):
            document.append({"kind": "box", "xyxy_px": [float(v) for v in prompt.xyxy_px]})
        elif isinstance(prompt, MaskPrompt):
            document.append({"kind": "mask", "rle": encode_rle(prompt.mask)})
        else:
            raise TypeError(f"Not a region prompt: {type(prompt).__name__}.")
    return document


def _numbers(item: dict, key: str, count: int, where: str) -> tuple[float, ...]:
    values = item.get(key)
    if (
        not isinstance(values, (list, tuple))
        or len(values) != count
        or not all(_is_number(v) for v in values)
    ):
        raise UserInputError(f'{where}"{key}" must be a list of {count} numbers; got {values!r}.')
    try:
        numbers = tuple(float(v) for v in values)
    except OverflowError:  # an integer beyond any float
        numbers = (math.inf,)
    if not all(math.isfinite(v) for v in numbers):
        raise UserInputError(
            f'{where}"{key}" contains NaN or infinity (or a number too large to use).'
        )
    return numbers


def document_to_prompts(doc: Any, *, height_px: int, width_px: int) -> list[RegionPrompt]:
    """Parse and validate a geometry document for an image of (height_px, width_px).

    A document is a JSON list of at most `MAX_REGIONS` items, each one of
    ``{"kind": "point", "xy_px": [x, y]}``, ``{"kind": "box", "xyxy_px": [x0, y0, x1, y1]}``
    or ``{"kind": "mask", "rle": <COCO RLE of the image's size>}``.
    Anything malformed raises UserInputError naming the region.
    """
    if not isinstance(doc, list):
        raise UserInputError(
            f"The region list must be a JSON list of regions; got {type(doc).__name__}."
        )
    if len(doc) > MAX_REGIONS:
        raise UserInputError(
            f"There are {len(doc)} regions; at most {MAX_REGIONS} are allowed per image."
        )
    prompts: list[RegionPrompt] = []
    for index, item in enumerate(doc):
        where = _label(index)
        if not isinstance(item, dict):
            raise UserInputError(f'{where}each region must be a JSON object with a "kind".')
        kind = item.get("kind")
        prompt: RegionPrompt
        if kind == "point":
            x, y = _numbers(item, "xy_px", 2, where)
            prompt = PointPrompt((x, y))
        elif kind == "box":
            x0, y0, x1, y1 = _numbers(item, "xyxy_px", 4, where)
            prompt = BoxPrompt((x0, y0, x1, y1))
        elif kind == "mask":
            rle = item.get("rle")
            if not isinstance(rle, dict):
                raise UserInputError(
                    f'{where}a mask region needs an "rle" object with "size" and "counts".'
                )
            try:
                mask = decode_rle(rle)
            except ValueError as error:
                raise UserInputError(f"{where}the mask RLE is invalid: {error}") from None
            prompt = MaskPrompt(mask)
        else:
            raise UserInputError(f'{where}unknown kind {kind!r}; use "point", "box" or "mask".')
        validate_prompt(prompt, height_px=height_px, width_px=width_px, index=index)
        prompts.append(prompt)
    return prompts


def document_to_masks(doc: Any, *, height_px: int, width_px: int) -> list[np.ndarray]:
    """Validate a geometry document and rasterise each region to a bool (H, W) mask."""
    prompts = document_to_prompts(doc, height_px=height_px, width_px=width_px)
    return [prompt_to_mask(p, height_px=height_px, width_px=width_px) for p in prompts]


# Square padding: resize the longest side to `target`, then centre on a target x target square.


def resize_longest_side_shape(size_hw: tuple[int, int], target: int) -> tuple[int, int]:
    """Shape after scaling so the longest side is ``target``: ``int(side * scale + 0.5)``."""
    height, width = size_hw
    scale = target / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def pad_offsets_centered(size_hw: tuple[int, int], target: int) -> tuple[int, int]:
    """``(top, left)`` padding that centres a resized image; an odd extra pixel goes bottom/right."""
    new_h, new_w = size_hw
    if new_h > target or new_w > target:
        raise ValueError(f"A {new_h}x{new_w} image does not fit in a {target}x{target} square.")
    return (target - new_h) // 2, (target - new_w) // 2


def _square_transform(original_hw: tuple[int, int], target: int) -> tuple[float, float, int, int]:
    new_h, new_w = resize_longest_side_shape(original_hw, target)
    top, left = pad_offsets_centered((new_h, new_w), target)
    # Per-axis scales from the rounded shape, so the image edges map exactly onto the square.
    return new_w / original_hw[1], new_h / original_hw[0], top, left


def pad_box_centered(
    xyxy_px: Sequence[float], *, original_hw: tuple[int, int], target: int
) -> tuple[float, float, float, float]:
    """Map a box from original-image pixels to pixels of the centred ``target`` square."""
    sx, sy, top, left = _square_transform(original_hw, target)
    x0, y0, x1, y1 = (float(v) for v in xyxy_px)
    return x0 * sx + left, y0 * sy + top, x1 * sx + left, y1 * sy + top


def unpad_box_centered(
    xyxy_square: Sequence[float], *, original_hw: tuple[int, int], target: int
) -> tuple[float, float, float, float]:
    """Map a box from the centred ``target`` square back to original-image pixels.

    The inverse of `pad_box_centered`; the result is clipped to the original image.
    """
    sx, sy, top, left = _square_transform(original_hw, target)
    height, width = original_hw
    x0, y0, x1, y1 = (float(v) for v in xyxy_square)
    xs = [min(max((x - left) / sx, 0.0), float(width)) for x in (x0, x1)]
    ys = [min(max((y - top) / sy, 0.0), float(height)) for y in (y0, y1)]
    return xs[0], ys[0], xs[1], ys[1]
