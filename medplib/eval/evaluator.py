"""Evaluate a checkpoint, or saved predictions, on a MeCoVQA-format file and build the report.

    result = evaluate_model(predictor, "grounding/holdout.json", "corpus/")
    result = evaluate_predictions("peer.jsonl", "grounding/holdout.json", "corpus/")
    write_report(result, "report.json", html_path="report.html")

Both paths score through the same code, so a peer's saved outputs and a model run are comparable.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medplib.data.files import FileReadError, load_image_rgb
from medplib.errors import UserInputError
from medplib.eval.dataset import EvalProblem, EvalSet, load_eval_set
from medplib.eval.html import Overlay, render_html
from medplib.eval.predictions import PredictionRecord, read_predictions, write_predictions
from medplib.eval.render import overlay_rgb, png_base64
from medplib.eval.runner import Progress, run_model, threshold_label
from medplib.eval.scoring import Scores, score
from medplib.masks import decode_rle
from medplib.metrics import EMPTY_MASK_RULE
from medplib.modeling.configuration import INFERENCE_SETTINGS

REPORT_FORMAT = "medplib-eval/1"
AS_GIVEN = "as given"  # label of masks whose binarisation threshold is unknown


@dataclass
class EvalConfig:
    threshold: float = 0.1  # sigmoid > 0.1, as MedPLIB's own evaluator binarises
    extra_thresholds: tuple[float, ...] = (0.5,)  # LISA / SAM-Med2D / BiomedParse use 0.5
    max_new_tokens: int = 128  # greedy; MeCoVQA answers are a sentence or a short paragraph
    limit: int | None = None  # first N valid records only (None: all)


@dataclass
class EvalResult:
    report: dict[str, Any]
    predictions: list[PredictionRecord]
    scores: Scores
    eval_set: EvalSet

    @property
    def scored(self) -> int:
        return len(self.scores.results)


def _report(
    eval_set: EvalSet,
    scores: Scores,
    problems: list[EvalProblem],
    inputs: dict[str, Any],
    thresholds: dict[str, Any],
    notes: list[str],
) -> dict[str, Any]:
    tasks = [r.item.task for r in scores.results]
    all_problems = sorted(
        problems + scores.problems, key=lambda p: p.index if p.index is not None else -1
    )
    return {
        "format": REPORT_FORMAT,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs,
        "counts": {
            "records_in_file": eval_set.records_in_file,
            "items_selected": len(eval_set.items),
            "scored": len(scores.results),
            "grounding": tasks.count("grounding"),
            "vqa": tasks.count("vqa"),
            "region": tasks.count("region"),
            "problems": len(all_problems),
        },
        "thresholds": thresholds,
        "empty_mask_rule": EMPTY_MASK_RULE,
        "grounding": scores.grounding,
        "text": scores.text,
        "samples": [r.record for r in scores.results],
        "problems": [p.to_dict() for p in all_problems],
        "notes": [*notes, *scores.notes],
    }


def _match(
    eval_set: EvalSet, records: Iterable[PredictionRecord]
) -> tuple[dict[str, PredictionRecord], list[EvalProblem], list[str]]:
    wanted = {item.id for item in eval_set.items}
    matched: dict[str, PredictionRecord] = {}
    problems: list[EvalProblem] = []
    ignored = 0
    for record in records:
        if record.id in wanted:
            matched[record.id] = record
        elif record.id in eval_set.file_ids:
            ignored += 1  # a record past --limit, or one the data check rejected
        else:
            problems.append(
                EvalProblem(
                    "predictions",
                    record.line,
                    record.id,
                    "id is not in the data file; line ignored",
                )
            )
    notes = [f"{ignored} prediction(s) for records not evaluated (past --limit or bad data)"]
    return matched, problems, notes if ignored else []


def _stated_threshold(records: Iterable[PredictionRecord]) -> float | None:
    """The ``threshold`` every record states, if they all state the same valid one."""
    given = {r.extra.get("threshold") for r in records}
    if len(given) != 1:
        return None
    value = given.pop()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        return None
    return float(value)


def evaluate_predictions(
    predictions: str | Path | Iterable[PredictionRecord],
    data_path: str | Path,
    image_root: str | Path,
    *,
    limit: int | None = None,
) -> EvalResult:
    """Score saved predictions (a JSONL path, or records) without a model."""
    eval_set = load_eval_set(data_path, image_root, limit=limit)
    problems = list(eval_set.problems)
    source = "(in memory)"
    if isinstance(predictions, (str, Path)):
        source = str(predictions)
        records, line_problems = read_predictions(predictions)
        problems += line_problems
    else:
        records = list(predictions)
    matched, match_problems, notes = _match(eval_set, records)
    problems += match_problems
    primary_value = _stated_threshold(matched.values())
    primary = AS_GIVEN if primary_value is None else threshold_label(primary_value)
    extra = sorted({k for r in matched.values() for k in r.masks_by_threshold} - {primary})
    description = (
        f"masks scored as saved in the predictions file (binarised by their producer at {primary})"
        if primary_value is not None
        else "masks scored as saved in the predictions file (binary; threshold not stated)"
    )
    if extra:
        description += "; also scored: masks_by_threshold " + ", ".join(extra)
    thresholds = {
        "primary": primary_value,
        "primary_label": primary,
        "extra": extra,
        "description": description,
        "notes": [],
    }
    scores = score(eval_set, matched, primary_label=primary)
    inputs = {
        "mode": "predictions",
        "predictions": source,
        "data": str(data_path),
        "images": str(image_root),
        "limit": limit,
    }
    report = _report(eval_set, scores, problems, inputs, thresholds, notes)
    return EvalResult(report, records, scores, eval_set)


def evaluate_model(
    predictor: Any,
    data_path: str | Path,
    image_root: str | Path,
    *,
    config: EvalConfig | None = None,
    progress: Progress | None = None,
    inputs: dict[str, Any] | None = None,
    eval_set: EvalSet | None = None,
) -> EvalResult:
    """Run `predictor` (a `MedPLIBPredictor`) on every item, then score its predictions.

    `eval_set`: the already loaded items of `data_path` (loaded here when None).
    """
    config = config or EvalConfig()
    if eval_set is None:
        eval_set = load_eval_set(data_path, image_root, limit=config.limit)
    run = run_model(
        predictor,
        eval_set,
        threshold=config.threshold,
        extra_thresholds=config.extra_thresholds,
        max_new_tokens=config.max_new_tokens,
        progress=progress,
    )
    labels = [threshold_label(t) for t in run.thresholds]
    description = f"model run: masks binarised at sigmoid(logit) > {labels[0]}"
    if len(labels) > 1:
        description += "; also > " + ", ".join(labels[1:])
    thresholds = {
        "primary": run.thresholds[0],
        "primary_label": labels[0],
        "extra": labels[1:],
        "description": description,
        "notes": run.notes,
    }
    scores = score(eval_set, {r.id: r for r in run.predictions}, primary_label=labels[0])
    trained = getattr(predictor.config, "trained", None)
    notes = []
    if trained is False:
        notes.append("The checkpoint is untrained (random weights): its scores carry no meaning.")
    all_inputs = {
        "mode": "model",
        "checkpoint_id": getattr(predictor, "checkpoint_id", None),
        "checkpoint_trained": trained,
        # Settings that change masks or answers but not the checkpoint id (config, not
        # weights): the mirror TTA gate and the answer checks. The mask threshold is the
        # evaluation's own (`thresholds`).
        **{
            name: getattr(predictor.config, name, None)
            for name in INFERENCE_SETTINGS
            if name != "mask_threshold"
        },
        "data": str(data_path),
        "images": str(image_root),
        "limit": config.limit,
        "max_new_tokens": config.max_new_tokens,
        "seconds": round(run.seconds, 3),
        **(inputs or {}),
    }
    problems = [*eval_set.problems, *run.problems]
    report = _report(eval_set, scores, problems, all_inputs, thresholds, notes)
    return EvalResult(report, run.predictions, scores, eval_set)


def select_cases(result: EvalResult, per_modality: int = 2) -> list[tuple[str, Any]]:
    """[(kind, ItemResult)]: the `per_modality` worst, then best, grounding cases per modality."""
    by_modality: dict[str, list] = {}
    for r in result.scores.results:
        if r.item.task == "grounding":
            by_modality.setdefault(r.item.modality, []).append(r)
    chosen: list[tuple[str, Any]] = []
    for modality in sorted(by_modality):
        ranked = sorted(by_modality[modality], key=lambda r: (r.record["dice"], r.item.index))
        worst = ranked[:per_modality]
        best = [r for r in reversed(ranked) if r not in worst][:per_modality]
        chosen += [("worst", r) for r in worst] + [("best", r) for r in best]
    return chosen


def build_overlays(result: EvalResult, per_modality: int = 2) -> list[Overlay]:
    """Overlay images (target contour, prediction fill) for the best and worst cases."""
    overlays = []
    for kind, r in select_cases(result, per_modality):
        item = r.item
        try:
            image = load_image_rgb(result.eval_set.image_path(item))
            target = result.eval_set.target_mask(item.target_paths, item.image_hw)
        except (FileReadError, ValueError):
            continue  # already reported when scoring
        prediction = decode_rle(r.prediction_rle) if r.prediction_rle else None
        if image.shape[:2] != item.image_hw:
            continue
        overlays.append(
            Overlay(
                modality=item.modality,
                kind=kind,
                id=item.id,
                question=r.record["question"],
                answer=r.record.get("answer") or "",
                dice=float(r.record["dice"]),
                image_uri=png_base64(overlay_rgb(image, target, prediction)),
                mask_scores=tuple(r.record.get("mask_scores") or ()),
                mirror_agreement=tuple(r.record.get("mirror_agreement") or ()),
            )
        )
    return overlays


def _write_text(path: Path, text: str, what: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserInputError(f"cannot write the {what} to {path} ({exc.strerror}).") from None


def predictions_path_for(report_path: str | Path) -> Path:
    """Where a model run's predictions go: beside the report, ``NAME.predictions.jsonl``."""
    p = Path(report_path)
    return p.with_name(f"{p.stem}.predictions.jsonl")


def write_report(
    result: EvalResult,
    report_path: str | Path,
    *,
    html_path: str | Path | None = None,
    predictions_path: str | Path | None = None,
    cases_per_modality: int = 2,
) -> dict[str, Path]:
    """Write the JSON report, optionally the HTML report and the predictions JSONL."""
    written: dict[str, Path] = {}
    out = Path(report_path)
    if predictions_path is not None:
        p = Path(predictions_path)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            write_predictions(p, result.predictions)
        except OSError as exc:
            raise UserInputError(f"cannot write the predictions to {p} ({exc.strerror}).") from None
        result.report["inputs"]["predictions_written"] = str(p)
        written["predictions"] = p
    _write_text(out, json.dumps(result.report, indent=2, allow_nan=False), "report")
    written["report"] = out
    if html_path is not None:
        h = Path(html_path)
        _write_text(
            h, render_html(result.report, build_overlays(result, cases_per_modality)), "HTML report"
        )
        written["html"] = h
    return written
