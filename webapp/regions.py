"""Region prompts between the canvases, the question text and the stored geometry document.

Pure functions. Three coordinate spaces meet here:

- *original* pixels: the uploaded image, in which regions are stored (``*_px``);
- *shown* pixels: the copy put on the canvases, within a width and height limit, so a large
  scan does not travel to the browser at full size and a tall one fits on the screen;
- canvas pixels: the prompter already scales those to the shown image's natural size.

Shown → original is a per-axis scale by ``original / shown``, the exact inverse of the resize
that made the shown copy (both images span the same extent), so no pixel offset creeps in.

Every region gets a ``label``: the number the user sees ("region 2"). Stored region lists keep
the label next to the geometry, so a reopened session shows the same numbers.

Regions of a reopened session are *saved* regions: they are kept as stored (never redrawn
through a canvas, so never rounded) and shown as outlines burnt into the canvas image; new
prompts are numbered after them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medplib.errors import UserInputError
from medplib.geometry import MaskPrompt, prompts_to_document
from medplib.masks import decode_rle
from webapp.widgets import decode_prompter_rows, editor_layer_to_mask

REGION_TAG = "<region>"
# `<region>` (optionally closed) or "region 2" / "Region #2": how a question names a region.
_REFERENCE = re.compile(r"<region>(?:\s*</region>)?|\bregion\s*#?\s*(\d+)\b", re.IGNORECASE)
_TAG = re.compile(r"<region>(?:\s*</region>)?", re.IGNORECASE)


def shown_size(
    width_px: int, height_px: int, *, max_width_px: int, max_height_px: int
) -> tuple[int, int]:
    """(width, height) of the canvas copy: within both limits, aspect kept, never enlarged."""
    scale = min(1.0, max_width_px / width_px, max_height_px / height_px)
    return max(1, round(width_px * scale)), max(1, round(height_px * scale))


def shown_to_original_rows(
    rows: Sequence[Sequence[float]],
    *,
    shown_wh: tuple[int, int],
    original_wh: tuple[int, int],
) -> list[list[float]]:
    """Scale ImagePrompter rows ``[x1, y1, t1, x2, y2, t2]`` from shown to original pixels."""
    sx = original_wh[0] / shown_wh[0]
    sy = original_wh[1] / shown_wh[1]
    scaled = []
    for row in rows:
        values = [float(v) for v in row]
        if len(values) != 6:
            raise UserInputError(f"The prompt {values!r} is not [x1, y1, t1, x2, y2, t2].")
        x1, y1, t1, x2, y2, t2 = values
        scaled.append([x1 * sx, y1 * sy, t1, x2 * sx, y2 * sy, t2])
    return scaled


@dataclass
class CanvasRegions:
    """Regions read off both canvases (geometry documents with labels) and notes for the user."""

    regions: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _layers(editor_value: Any) -> list[np.ndarray]:
    if not isinstance(editor_value, dict):
        return []
    return [np.asarray(layer) for layer in editor_value.get("layers") or [] if layer is not None]


def _painted(layer: np.ndarray) -> bool:
    if layer.ndim == 3 and layer.shape[-1] in (2, 4):
        return bool(np.any(layer[..., -1] > 0))
    return bool(np.any(layer != 0))


def collect_regions(
    prompter_value: Any,
    editor_value: Any,
    *,
    original_wh: tuple[int, int],
    shown_wh: tuple[int, int],
    saved: Sequence[dict[str, Any]] = (),
) -> CanvasRegions:
    """Saved regions, then every prompt on the two canvases, labelled 1, 2, ... in that order.

    Points and boxes from the prompter come in drawing order, then each painted layer of the
    sketch editor as one free-form region. Coordinates are original-image pixels. Negative
    clicks are dropped with a note.
    """
    width_px, height_px = original_wh
    rows = (prompter_value or {}).get("points") if isinstance(prompter_value, dict) else None
    scaled = shown_to_original_rows(rows or [], shown_wh=shown_wh, original_wh=original_wh)
    decoded = decode_prompter_rows(scaled, width_px=width_px, height_px=height_px)
    prompts: list[Any] = list(decoded.prompts)
    for layer in _layers(editor_value):
        if _painted(layer):
            mask = editor_layer_to_mask(layer, height_px=height_px, width_px=width_px)
            prompts.append(MaskPrompt(mask))
    document = [dict(item) for item in saved] + prompts_to_document(prompts)
    for number, item in enumerate(document, start=1):
        item["label"] = number
    return CanvasRegions(regions=document, notes=list(decoded.skipped))


def relabel(regions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of the regions numbered 1, 2, ... in list order."""
    return [{**item, "label": number} for number, item in enumerate(regions, start=1)]


def describe_region(item: dict[str, Any], number: int | None = None) -> str:
    """One line for the region list, e.g. ``region 2: box (50, 40)–(150, 120) px``."""
    label = item.get("label", number)
    head = f"region {label}" if label is not None else "region"
    kind = item.get("kind")
    if kind == "point":
        x, y = item["xy_px"]
        return f"{head}: point ({x:.0f}, {y:.0f}) px"
    if kind == "box":
        x0, y0, x1, y1 = item["xyxy_px"]
        return f"{head}: box ({x0:.0f}, {y0:.0f})–({x1:.0f}, {y1:.0f}) px"
    if kind == "mask":
        area = int(decode_rle(item["rle"]).sum())
        return f"{head}: sketch, {area:,} px"
    return f"{head}: {kind}"


@dataclass(frozen=True)
class ResolvedQuestion:
    """The question as the model reads it: one ``<region>`` per region, regions in tag order."""

    text: str
    regions: list[dict[str, Any]]


def resolve_references(
    question: str, regions: Sequence[dict[str, Any]], *, implicit_from: int = 1
) -> ResolvedQuestion:
    """Turn "region 2" and ``<region>`` references into model tags and order the regions.

    - "region N" names the region labelled N; a bare ``<region>`` takes the next region that
      no "region N" names, in label order.
    - A question that names no region gets one tag appended per region labelled
      ``implicit_from`` or higher (the official demo's behaviour for what was just drawn), so
      nothing new is silently ignored; regions saved by earlier questions are sent only when
      named.
    - Without regions, "region N" is ordinary prose and a ``<region>`` tag is an error.

    Raises UserInputError with a sentence for the user on a reference that cannot be met.
    """
    by_label = {int(item.get("label", i + 1)): item for i, item in enumerate(regions)}
    if not regions:
        if _TAG.search(question):
            raise UserInputError(
                "The question contains <region>, but no region is drawn; draw one on the "
                "image or remove the tag."
            )
        return ResolvedQuestion(text=question, regions=[])
    matches = list(_REFERENCE.finditer(question))
    if not matches:
        ordered = [by_label[label] for label in sorted(by_label) if label >= implicit_from]
        text = question.rstrip() + "".join(f" {REGION_TAG}" for _ in ordered)
        return ResolvedQuestion(text=text, regions=[dict(item) for item in ordered])
    named = {int(m.group(1)) for m in matches if m.group(1) is not None}
    for label in sorted(named):
        if label not in by_label:
            raise UserInputError(
                f"The question mentions region {label}, but the drawn regions are "
                f"{_label_range(sorted(by_label))}; check the number."
            )
    free = [label for label in sorted(by_label) if label not in named]
    ordered_labels: list[int] = []
    for m in matches:
        if m.group(1) is not None:
            ordered_labels.append(int(m.group(1)))
        elif free:
            ordered_labels.append(free.pop(0))
        else:
            raise UserInputError(
                "The question has more <region> tags than there are unnamed regions; "
                "draw another region or name one, e.g. 'region 1'."
            )
    text = _REFERENCE.sub(REGION_TAG, question)
    return ResolvedQuestion(text=text, regions=[dict(by_label[label]) for label in ordered_labels])


def _label_range(labels: Sequence[int]) -> str:
    if len(labels) == 1:
        return f"region {labels[0]} only"
    return "regions " + ", ".join(str(v) for v in labels)


def question_for_display(text: str, regions: Sequence[dict[str, Any]]) -> str:
    """A stored question with each ``<region>`` tag written as the region's label."""
    labels = iter([item.get("label", i + 1) for i, item in enumerate(regions)])

    def name(_: re.Match[str]) -> str:
        return f"[region {next(labels, '?')}]"

    return _TAG.sub(name, text)
