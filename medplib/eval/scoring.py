"""Score predictions against an `EvalSet`: grounding masks and VQA / region-VQA answers.

Grounding, per sample at the image's resolution (rule from MedPLIB's evaluator, made explicit):
- all predicted masks of the answer are OR-ed, the reference masks too, and Dice / IoU are taken
  between the two unions (`medplib.metrics`, with its empty-mask rule);
- an answer without `<SEG>` (no mask at all) is scored as an empty predicted mask, exactly like
  a `<SEG>` whose mask is empty: 0 against a non-empty reference, 1 against an empty one, in
  every metric (so mIoU and gIoU are the same number); it is also counted in ``no_seg_rate``;
- question-ignoring check: where the same image has other annotated targets in the file, the
  prediction's Dice against each other target is averaged; a model that segments "some
  structure" whatever the question scores about as well there as on its own target.

Text (VQA, region VQA), after `medplib.metrics.normalize_answer`: closed-question accuracy
(closed items only), exact match, token F1, BLEU-1..4 (add-one smoothed for n > 1) and ROUGE-L
F1 (all items), grouped per task, modality, source and answer kind.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

import numpy as np

from medplib.eval.dataset import EvalItem, EvalProblem, EvalSet, strip_tags
from medplib.eval.predictions import MaskEntry, PredictionRecord, decode_mask_entry
from medplib.eval.render import union_masks
from medplib.masks import encode_rle
from medplib.metrics import (
    EMPTY_MASK_RULE,
    aggregate_segmentation,
    bleu,
    closed_accuracy,
    dice,
    exact_match,
    rouge_l,
    segmentation_record,
    token_f1,
)

NO_SEG_RULE = (
    "An answer without <SEG> is scored as an empty predicted mask: Dice = IoU = 0 against a "
    "non-empty reference, 1 against an empty one (the empty-mask rule)."
)
UNION_RULE = "Several masks in one answer (prediction or reference) are scored as their union."
TEXT_KEYS = ("exact_match", "token_f1", "bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l")
QUESTION_IGNORING_NOTE = (
    "Dice of each prediction against the other (non-empty) annotated targets of the same image "
    "in the file (mean over them), beside its Dice on its own target, over the samples whose "
    "image has another target. "
    "A small gap means the model segments some structure whatever the question asks."
)


@dataclass
class ItemResult:
    """One scored item: its JSON record and, for grounding, the predicted union as RLE."""

    item: EvalItem
    record: dict[str, Any]
    prediction_rle: dict | None = None  # union of the predicted masks (primary threshold)


@dataclass
class Scores:
    grounding: dict[str, Any] | None
    text: dict[str, Any] | None
    results: list[ItemResult]
    problems: list[EvalProblem]
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- text metrics
def text_record(prediction: str, reference: str, *, closed: bool) -> dict[str, Any]:
    """Per-item text metrics (both strings are normalised by the metric functions)."""
    pred, ref = strip_tags(prediction), strip_tags(reference)
    b = bleu(pred, ref)
    return {
        "closed": closed,
        "closed_correct": closed_accuracy(pred, ref) if closed else None,
        "exact_match": exact_match(pred, ref),
        "token_f1": token_f1(pred, ref)["f1"],
        **{f"bleu_{n}": b[f"bleu_{n}"] for n in range(1, 5)},
        "rouge_l": rouge_l(pred, ref)["f1"],
    }


def _text_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    closed = [float(r["closed_correct"]) for r in records if r["closed"]]
    out: dict[str, Any] = {
        "count": len(records),
        "closed_count": len(closed),
        "closed_accuracy": fmean(closed) if closed else None,
        "open_count": len(records) - len(closed),
    }
    out.update({k: fmean(float(r[k]) for r in records) for k in TEXT_KEYS})
    return out


def aggregate_text(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Text metrics overall and per task / modality / source / answer kind (closed, open),
    and per question kind where the records name one (``per_question_kind``, else empty).

    Each record is a `text_record` plus ``task``, ``modality``, ``source`` and optionally
    ``question_kind``.
    """
    items = list(records)
    if not items:
        raise ValueError("No text records to aggregate.")

    def grouped(key) -> dict[str, dict[str, Any]]:
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for r in items:
            groups.setdefault(key(r), []).append(r)
        return {name: _text_summary(g) for name, g in sorted(groups.items())}

    return {
        "overall": _text_summary(items),
        "per_task": grouped(lambda r: str(r["task"])),
        "per_modality": grouped(lambda r: str(r["modality"])),
        "per_source": grouped(lambda r: str(r["source"])),
        "per_answer_kind": grouped(lambda r: "closed" if r["closed"] else "open"),
        "per_question_kind": (
            grouped(lambda r: str(r.get("question_kind") or "unnamed"))
            if any(r.get("question_kind") for r in items)
            else {}
        ),
    }


# ----------------------------------------------------------------------------- grounding
def _decode_all(
    entries: Sequence[MaskEntry], eval_set: EvalSet, hw: tuple[int, int]
) -> list[np.ndarray]:
    return [decode_mask_entry(e, eval_set.image_root, hw) for e in entries]


def grounding_record(
    predicted: Sequence[np.ndarray], target: np.ndarray, *, modality: str, source: str
) -> dict[str, Any]:
    """`segmentation_record` of the predicted union; no mask at all counts as an empty mask.

    One rule for every metric: a missing `<SEG>` and a `<SEG>` with an empty mask score the
    same, so an item whose reference is empty too is a perfect answer in Dice, IoU and gIoU.
    """
    pred = union_masks(predicted, target.shape)  # (H, W) bool; all False when nothing predicted
    return segmentation_record(pred, target, modality=modality, source=source)


def _other_target_dice(
    eval_set: EvalSet, item: EvalItem, pred: np.ndarray | None, target: np.ndarray
) -> float | None:
    scores = []
    for key in eval_set.other_targets(item):
        try:
            other = eval_set.target_mask(key, item.image_hw)
        except ValueError:
            continue  # that record is reported as a problem of its own
        if not other.any() or np.array_equal(other, target):
            continue  # an empty mask annotates nothing; equal pixels are not a different target
        scores.append(0.0 if pred is None else dice(pred, other))
    return fmean(scores) if scores else None


def _block(records: list[dict[str, Any]], no_seg: list[bool]) -> dict[str, Any]:
    block = aggregate_segmentation(records)
    block["no_seg_count"] = sum(no_seg)
    block["no_seg_rate"] = sum(no_seg) / len(no_seg)
    for name, summary in block["per_modality"].items():
        summary["no_seg_count"] = sum(
            flag for r, flag in zip(records, no_seg, strict=True) if r["modality"] == name
        )
    return block


def _question_ignoring(rows: list[tuple[EvalItem, float, float]]) -> dict[str, Any]:
    """rows: (item, own Dice, mean Dice against the image's other targets)."""
    if not rows:
        return {"count": 0, "mDice_own_target": None, "mDice_other_target": None, "gap": None}

    def summary(part: list[tuple[EvalItem, float, float]]) -> dict[str, Any]:
        own = fmean(r[1] for r in part)
        other = fmean(r[2] for r in part)
        return {
            "count": len(part),
            "mDice_own_target": own,
            "mDice_other_target": other,
            "gap": own - other,
        }

    per_modality: dict[str, list[tuple[EvalItem, float, float]]] = {}
    for row in rows:
        per_modality.setdefault(row[0].modality, []).append(row)
    out = summary(rows)
    out["per_modality"] = {m: summary(p) for m, p in sorted(per_modality.items())}
    return out


def dice_key(report: Mapping[str, Any], threshold: str) -> str:
    """The field of a report's grounding samples holding Dice at `threshold`: "dice" for the
    report's primary threshold, "dice@T" for an extra one; ValueError when it has neither."""
    grounding = report.get("grounding") or {}
    if str(grounding.get("threshold")) == threshold:
        return "dice"
    if threshold in (grounding.get("by_threshold") or {}):
        return f"dice@{threshold}"
    known = [str(grounding.get("threshold")), *(grounding.get("by_threshold") or {})]
    raise ValueError(f"The report has no Dice at threshold {threshold}; it has {known}.")


# Per-mask numbers a model run writes beside its masks (`runner.run_model`); copied into the
# grounding sample so a report shows each case's confidence beside the Dice it got.
MASK_SIGNALS = ("mask_scores", "mirror_agreement")


def mask_signal(value: Any, num_masks: int) -> list[float | None]:
    """One number (or None) per mask, checked: a list as long as the masks, finite numbers."""
    if not isinstance(value, list):
        raise ValueError(f"a {type(value).__name__}, not a list")
    if len(value) != num_masks:
        raise ValueError(f"{len(value)} values for {num_masks} mask(s)")
    out: list[float | None] = []
    for v in value:
        if v is None:
            out.append(None)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
        else:
            raise ValueError(f"{v!r} is not a finite number")
    return out


# ----------------------------------------------------------------------------- scoring
def score(
    eval_set: EvalSet, predictions: Mapping[str, PredictionRecord], *, primary_label: str
) -> Scores:
    """Score every item that has a prediction; items that cannot be scored become problems.

    `primary_label` names the threshold of each record's ``masks`` (e.g. "0.1", or "as given");
    every key of ``masks_by_threshold`` is scored as an extra block in ``by_threshold``.
    """
    problems: list[EvalProblem] = []
    results: list[ItemResult] = []
    seg: dict[str, tuple[list[dict[str, Any]], list[bool]]] = {}
    ignoring_rows: list[tuple[EvalItem, float, float]] = []
    text_rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for item in eval_set.items:
        pred = predictions.get(item.id)
        if pred is None:
            problems.append(
                EvalProblem("scoring", item.index, item.id, "no prediction for this id")
            )
            continue
        base = {
            "id": item.id,
            "index": item.index,
            "task": item.task,
            "modality": item.modality,
            "source": item.source,
            "image": item.image_rel,
            "question": strip_tags(item.question),
            "reference": item.reference,
            "answer": pred.answer,
        }
        if item.task != "grounding":
            if pred.answer is None:
                problems.append(
                    EvalProblem(
                        "scoring", item.index, item.id, f"no 'answer' for a {item.task} item"
                    )
                )
                continue
            row = text_record(pred.answer, item.reference, closed=item.closed)
            text_rows.append(
                {
                    **row,
                    "task": item.task,
                    "modality": item.modality,
                    "source": item.source,
                    "question_kind": item.question_kind,
                }
            )
            results.append(ItemResult(item, {**base, "answer_type": item.answer_type, **row}))
            continue
        try:
            target = eval_set.target_mask(item.target_paths, item.image_hw)
            predicted = _decode_all(pred.masks, eval_set, item.image_hw)
        except ValueError as exc:
            problems.append(EvalProblem("scoring", item.index, item.id, str(exc)))
            continue
        record = grounding_record(predicted, target, modality=item.modality, source=item.source)
        union = union_masks(predicted, item.image_hw) if predicted else None
        seg.setdefault(primary_label, ([], []))
        seg[primary_label][0].append(record)
        seg[primary_label][1].append(not predicted)
        other = _other_target_dice(eval_set, item, union, target)
        if other is not None:
            ignoring_rows.append((item, float(record["dice"]), other))
        sample = {
            **base,
            "no_seg": not predicted,
            "num_masks": len(predicted),
            "dice": record["dice"],
            "iou": record["iou"],
            "pred_area": record["pred_area"],
            "target_area": record["target_area"],
            "other_target_dice": other,
        }
        for name in MASK_SIGNALS:
            if name not in pred.extra:
                continue
            try:
                sample[name] = mask_signal(pred.extra[name], len(predicted))
            except ValueError as exc:
                notes.append(f"id {item.id}: {name} not shown ({exc})")
        for label, entries in sorted(pred.masks_by_threshold.items()):
            if label == primary_label:
                continue
            try:
                extra = _decode_all(entries, eval_set, item.image_hw)
            except ValueError as exc:
                notes.append(f"id {item.id}: masks_by_threshold[{label!r}] skipped ({exc})")
                continue
            r = grounding_record(extra, target, modality=item.modality, source=item.source)
            seg.setdefault(label, ([], []))
            seg[label][0].append(r)
            seg[label][1].append(not extra)
            sample[f"dice@{label}"] = r["dice"]
        results.append(ItemResult(item, sample, encode_rle(union) if union is not None else None))
    grounding = None
    if primary_label in seg:
        records, flags = seg.pop(primary_label)
        grounding = _block(records, flags)
        grounding["threshold"] = primary_label
        grounding["empty_target_count"] = sum(1 for r in records if r["target_area"] == 0)
        grounding["multi_mask_count"] = sum(1 for r in results if r.record.get("num_masks", 0) > 1)
        grounding["question_ignoring"] = {
            **_question_ignoring(ignoring_rows),
            "note": QUESTION_IGNORING_NOTE,
        }
        grounding["by_threshold"] = {}
        for label, (extra_records, extra_flags) in sorted(seg.items()):
            block = _block(extra_records, extra_flags)
            block["threshold"] = label
            if len(extra_records) < len(records):
                notes.append(
                    f"threshold {label} covers {len(extra_records)} of {len(records)} grounding samples"
                )
            grounding["by_threshold"][label] = block
        grounding["rules"] = [EMPTY_MASK_RULE, NO_SEG_RULE, UNION_RULE]
    text = aggregate_text(text_rows) if text_rows else None
    return Scores(grounding, text, results, problems, notes)
