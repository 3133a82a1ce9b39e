"""Predictions as JSON Lines: what the evaluator scores, whoever produced them.

One object per line::

    {"id": "ct_00--...#g5", "answer": "Here is the liver.",
     "masks": ["preds/ct_00--...#g5.png", {"size": [h, w], "counts": "..."}]}

- ``id``: the data record's `id` (or its index in the data file when it has none);
- ``answer``: the readable answer text (needed for VQA and region items);
- ``masks``: one entry per `<SEG>`, a PNG path relative to the image root or COCO RLE (compressed
  or uncompressed); an empty list means the model produced no `<SEG>`;
- optional ``masks_by_threshold``: ``{"0.5": [...], ...}``, the same masks binarised at other
  thresholds, each scored as its own block; optional ``threshold``: the probability threshold
  that produced ``masks``;
- optional ``mask_scores`` and ``mirror_agreement``: one number (or null) per mask, the model's
  own confidence; copied into the report's sample and shown beside its case, not scored.
Other keys are kept but not scored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medplib.data.files import FileReadError, load_mask, resolve
from medplib.errors import UserInputError
from medplib.eval.dataset import EvalProblem
from medplib.masks import decode_rle

MaskEntry = str | dict  # PNG path relative to the image root, or COCO RLE


@dataclass
class PredictionRecord:
    id: str
    answer: str | None
    masks: list[MaskEntry]  # one per <SEG>; [] = no <SEG>
    masks_by_threshold: dict[str, list[MaskEntry]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # kept as written, not scored
    line: int | None = None  # 1-based line in the file it was read from

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id, "answer": self.answer, "masks": self.masks}
        if self.masks_by_threshold:
            doc["masks_by_threshold"] = self.masks_by_threshold
        doc.update({k: v for k, v in self.extra.items() if k not in doc})
        return doc


def _mask_list(value: Any, what: str) -> list[MaskEntry]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"'{what}' must be a list of PNG paths or RLE objects")
    for i, entry in enumerate(value):
        if isinstance(entry, str):
            if not entry.strip():
                raise ValueError(f"'{what}' entry {i} is an empty path")
        elif not isinstance(entry, dict):
            raise ValueError(
                f"'{what}' entry {i} is a {type(entry).__name__}, not a PNG path or RLE object"
            )
    return list(value)


def parse_prediction(doc: Any, line: int) -> PredictionRecord:
    """One predictions line (already JSON-decoded); raises ValueError with the reason."""
    if not isinstance(doc, dict):
        raise ValueError(f"the line holds a JSON {type(doc).__name__}, not an object")
    rid = doc.get("id")
    if rid is None or rid == "" or isinstance(rid, (dict, list, bool)):
        raise ValueError("'id' is missing or not a string / number")
    answer = doc.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise ValueError(f"'answer' must be a string; got {type(answer).__name__}")
    masks = _mask_list(doc.get("masks"), "masks")
    by_threshold: dict[str, list[MaskEntry]] = {}
    raw_by = doc.get("masks_by_threshold")
    if raw_by is not None:
        if not isinstance(raw_by, dict):
            raise ValueError("'masks_by_threshold' must map a threshold to a list of masks")
        for key, value in raw_by.items():
            by_threshold[str(key)] = _mask_list(value, f"masks_by_threshold[{key!r}]")
    extra = {
        k: v for k, v in doc.items() if k not in ("id", "answer", "masks", "masks_by_threshold")
    }
    return PredictionRecord(str(rid), answer, masks, by_threshold, extra, line)


def read_predictions(path: str | Path) -> tuple[list[PredictionRecord], list[EvalProblem]]:
    """Parse a predictions JSONL file; each bad line becomes a problem, later duplicates too.

    Raises `UserInputError` when the file is missing, not UTF-8, or a JSON array.
    """
    p = Path(path)
    if not p.is_file():
        raise UserInputError(f"predictions file {p} does not exist or is not a file.")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserInputError(f"predictions file {p} is not UTF-8 text ({exc.reason}).") from None
    except OSError as exc:
        raise UserInputError(f"predictions file {p} cannot be read ({exc.strerror}).") from None
    if text.lstrip().startswith("["):
        raise UserInputError(
            f"predictions file {p} is a JSON array; write one JSON object per line (JSON Lines)."
        )
    records: list[PredictionRecord] = []
    problems: list[EvalProblem] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(EvalProblem("predictions", number, None, f"not valid JSON ({exc.msg})"))
            continue
        rid = str(doc["id"]) if isinstance(doc, dict) and "id" in doc else None
        try:
            record = parse_prediction(doc, number)
        except ValueError as exc:
            problems.append(EvalProblem("predictions", number, rid, str(exc)))
            continue
        if record.id in seen:
            problems.append(
                EvalProblem(
                    "predictions", number, record.id, "duplicate id; the first line is kept"
                )
            )
            continue
        seen.add(record.id)
        records.append(record)
    return records, problems


def _finite(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_predictions(path: str | Path, records: Iterable[PredictionRecord]) -> Path:
    """Write records as JSON Lines (the format `read_predictions` reads)."""
    p = Path(path)
    with p.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(_finite(record.to_json()), ensure_ascii=False) + "\n")
    return p


def decode_mask_entry(entry: MaskEntry, image_root: Path, shape_hw: tuple[int, int]) -> np.ndarray:
    """A predicted mask as bool (H, W); raises ValueError unless it decodes at the image size."""
    h, w = shape_hw
    if isinstance(entry, str):
        path, _ = resolve(image_root, entry)
        if path is None:
            raise ValueError(f"mask file {entry} not found under {image_root}")
        try:
            mask = load_mask(path)
        except FileReadError as exc:
            raise ValueError(f"mask file {entry}: {exc}") from None
        if mask.shape != (h, w):
            raise ValueError(
                f"mask file {entry} is {mask.shape[1]}x{mask.shape[0]} but the image is {w}x{h}"
            )
        return mask
    try:
        mask = decode_rle(entry)
    except ValueError as exc:
        raise ValueError(f"bad RLE: {exc}") from None
    if mask.shape != (h, w):
        raise ValueError(
            f"RLE size is {mask.shape[0]}x{mask.shape[1]} (h x w) but the image is {h}x{w}"
        )
    return mask
