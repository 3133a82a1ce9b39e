"""Run a `MedPLIBPredictor` over an `EvalSet` and collect `PredictionRecord`s.

The predictor binarises each `<SEG>` mask at ``config.mask_threshold``; the run sets that to the
requested threshold (MedPLIB's evaluator uses sigmoid > 0.1). To score other thresholds (0.5,
the LISA / SAM-Med2D / BiomedParse convention) without a second generation, the run records
the mask logits the model's `decode_masks` returns while the predictor works. Those extra masks
are used only when, for every mask of the run, re-thresholding the recorded logits at the main
threshold gives back exactly the predictor's mask; otherwise the report says they are missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medplib.data.files import FileReadError, load_image_rgb
from medplib.errors import UserInputError
from medplib.eval.dataset import EvalItem, EvalProblem, EvalSet
from medplib.eval.predictions import PredictionRecord
from medplib.masks import encode_rle

Progress = Callable[[int, int], None]  # (items done, items total)


@dataclass
class RunResult:
    predictions: list[PredictionRecord]
    problems: list[EvalProblem]
    thresholds: list[float]  # main threshold first, then the extra ones actually delivered
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def threshold_label(threshold: float) -> str:
    """Key of a threshold in reports and ``masks_by_threshold`` ("0.1", "0.5")."""
    return f"{threshold:g}"


def _vote(vote: Any) -> dict | None:
    return vote.to_dict() if vote is not None else None


def _history(eval_set: EvalSet, item: EvalItem) -> list[tuple]:
    turns: list[tuple] = []
    for turn in item.history:
        regions = [eval_set.load_mask(p, item.image_hw) for p in turn.region_mask_paths]
        turns.append((turn.question, turn.answer, regions))
    return turns


def run_model(
    predictor: Any,
    eval_set: EvalSet,
    *,
    threshold: float = 0.1,
    extra_thresholds: tuple[float, ...] = (0.5,),
    max_new_tokens: int = 128,
    progress: Progress | None = None,
) -> RunResult:
    """Ask the predictor every item's question (greedy) and return predictions as RLE.

    Items whose image or region masks cannot be read, or that the predictor rejects, become
    problems. The predictor's ``config.mask_threshold`` is restored afterwards.
    """
    if not 0.0 < threshold < 1.0:
        raise UserInputError(f"--threshold must be between 0 and 1 (exclusive); got {threshold}.")
    extras = [t for t in dict.fromkeys(extra_thresholds) if t != threshold and 0.0 < t < 1.0]
    t0 = time.perf_counter()
    records: list[PredictionRecord] = []
    problems: list[EvalProblem] = []
    config = predictor.config
    saved = config.mask_threshold
    config.mask_threshold = threshold
    current_image: str | None = None
    try:
        for done, item in enumerate(eval_set.items):
            try:
                if item.image_rel != current_image:
                    predictor.set_image(load_image_rgb(eval_set.image_path(item)))
                    current_image = item.image_rel
                regions = [eval_set.load_mask(p, item.image_hw) for p in item.region_paths]
                history = _history(eval_set, item)
                pred = predictor.ask(
                    item.question,
                    regions,
                    history,
                    max_new_tokens=max_new_tokens,
                    extra_thresholds=extras,
                )
            except (FileReadError, ValueError) as exc:  # UserInputError is a ValueError
                current_image = None if isinstance(exc, FileReadError) else current_image
                problems.append(EvalProblem("model", item.index, item.id, str(exc)))
                continue
            masks = [m.mask for m in pred.masks]
            by_threshold: dict[str, list[str | dict]] = {
                threshold_label(t): [encode_rle(m.at_thresholds[t]) for m in pred.masks]
                for t in extras
            }
            records.append(
                PredictionRecord(
                    id=item.id,
                    answer=pred.answer,
                    masks=[encode_rle(m) for m in masks],
                    masks_by_threshold=by_threshold,
                    extra={
                        "raw_answer": pred.raw_answer,
                        "threshold": threshold,
                        "task": item.task,
                        "modality": item.modality,
                        "source": item.source,
                        "checkpoint_id": pred.checkpoint_id,
                        "finish_reason": pred.finish_reason,
                        "seconds": pred.timings.get("total"),
                        # Per mask, in `masks` order: the model's own confidence signals, kept
                        # so they can be read against the Dice they turned out to have.
                        "mask_scores": [m.score for m in pred.masks],
                        "mirror_agreement": [m.mirror_agreement for m in pred.masks],
                        # How a left/right, presence or region answer was checked (None: not checked),
                        # so a report can count what the checks changed.
                        "side_vote": _vote(getattr(pred, "side_vote", None)),
                        "presence_vote": _vote(getattr(pred, "presence_vote", None)),
                        "region_vote": _vote(getattr(pred, "region_vote", None)),
                    },
                )
            )
            if progress is not None:
                progress(done + 1, len(eval_set.items))
    finally:
        config.mask_threshold = saved
    return RunResult(records, problems, [threshold, *extras], [], time.perf_counter() - t0)
