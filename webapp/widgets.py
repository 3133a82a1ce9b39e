"""Decoding the canvases' payloads into region prompts.

The point/box prompter and the sketch canvas (``gr.ImageEditor``) are web widgets; what they
send is turned here into `medplib.geometry` prompts, which the library validates and rasterises.
Pure functions; coordinates are original-image pixels (``_px``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medplib.errors import UserInputError
from medplib.geometry import BoxPrompt, PointPrompt, RegionPrompt, validate_prompt
from medplib.masks import resize_mask_nearest

# The point/box prompter (the web app's canvas) encodes each prompt as [x1, y1, t1, x2, y2, t2].
_PROMPTER_POSITIVE_POINT = (1, 4)
_PROMPTER_NEGATIVE_POINT = (0, 4)
_PROMPTER_BOX = (2, 3)


@dataclass
class PrompterDecoding:
    """Result of decoding prompter rows: the regions kept and a sentence per row skipped."""

    prompts: list[RegionPrompt] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _label(index: int) -> str:
    return f"Region {index + 1}: "


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def decode_prompter_rows(
    rows: Sequence[Sequence[float]] | np.ndarray | None, *, width_px: int, height_px: int
) -> PrompterDecoding:
    """Decode point/box prompter rows ``[x1, y1, t1, x2, y2, t2]`` into validated region prompts.

    Each row is ``[x1, y1, t1, x2, y2, t2]`` in original-image pixels (the component already
    scales canvas coordinates by the natural image size):

    - ``t1 == 1, t2 == 4``: a positive click at (x1, y1) -> PointPrompt;
    - ``t1 == 2, t2 == 3``: a dragged box with corners (x1, y1), (x2, y2) in any order ->
      BoxPrompt with ordered corners;
    - ``t1 == 0, t2 == 4``: a negative click. MedPLIB regions are positive only, so it is
      skipped and a sentence saying so is added to ``skipped``.

    Raises UserInputError for rows of the wrong length, unknown type codes or prompts that fail
    `validate_prompt` (boxes partly outside the image are kept; they are clipped later).
    """
    decoding = PrompterDecoding()
    if rows is None:
        return decoding
    for index, row in enumerate(list(rows)):
        values = list(row)
        if len(values) != 6 or not all(_is_number(v) for v in values):
            raise UserInputError(
                f"{_label(index)}the prompt row {values!r} is not [x1, y1, t1, x2, y2, t2]; "
                "redraw the prompt."
            )
        x1, y1, t1, x2, y2, t2 = (float(v) for v in values)
        kind = (t1, t2)
        prompt: RegionPrompt
        if kind == _PROMPTER_POSITIVE_POINT:
            prompt = PointPrompt((x1, y1))
        elif kind == _PROMPTER_BOX:
            prompt = BoxPrompt((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))
        elif kind == _PROMPTER_NEGATIVE_POINT:
            decoding.skipped.append(
                f"Prompt {index + 1} is a negative point at {_fmt((x1, y1))}; regions are "
                "positive only, so it was ignored."
            )
            continue
        else:
            raise UserInputError(
                f"{_label(index)}unknown prompt type ({t1:g}, {t2:g}); use a click or a "
                "dragged box."
            )
        validate_prompt(prompt, height_px=height_px, width_px=width_px, index=index)
        decoding.prompts.append(prompt)
    return decoding


def prompter_rows_to_prompts(
    rows: Sequence[Sequence[float]] | np.ndarray | None, *, width_px: int, height_px: int
) -> list[RegionPrompt]:
    """The region prompts of `decode_prompter_rows` (negative points are skipped)."""
    return decode_prompter_rows(rows, width_px=width_px, height_px=height_px).prompts


def editor_layer_to_mask(layer: np.ndarray, *, height_px: int, width_px: int) -> np.ndarray:
    """Turn a ``gr.ImageEditor`` brush layer into a bool mask at the original image size.

    A pixel is painted when its alpha is > 0 (layers without alpha: any non-zero channel).
    The editor may show a downscaled copy of the image, so the layer is resized with
    nearest neighbour (`medplib.masks.resize_mask_nearest`) to (height_px, width_px).
    """
    array = np.asarray(layer)
    if array.ndim == 3 and array.shape[-1] in (2, 4):
        painted = array[..., -1] > 0  # (h, w) alpha
    elif array.ndim == 3:
        painted = np.any(array != 0, axis=-1)
    elif array.ndim == 2:
        painted = array != 0
    else:
        raise UserInputError(
            f"The drawing layer has shape {array.shape}; expected an (H, W) or (H, W, C) image."
        )
    if painted.shape[0] < 1 or painted.shape[1] < 1:
        raise UserInputError("The drawing layer is empty (0 pixels); draw on the image again.")
    return resize_mask_nearest(painted, (height_px, width_px))
