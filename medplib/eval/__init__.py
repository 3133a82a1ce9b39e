"""Evaluation: score grounding masks and VQA answers on MeCoVQA-format files.

`evaluate_model` runs a predictor; `evaluate_predictions` scores saved predictions (JSON Lines,
see `medplib.eval.predictions`) from any model through the same code. `write_report` writes the
JSON report, the predictions and a self-contained HTML page.
"""

from __future__ import annotations

from medplib.eval.dataset import EvalItem, EvalProblem, EvalSet, load_eval_set
from medplib.eval.evaluator import (
    REPORT_FORMAT,
    EvalConfig,
    EvalResult,
    build_overlays,
    evaluate_model,
    evaluate_predictions,
    predictions_path_for,
    select_cases,
    write_report,
)
from medplib.eval.html import Overlay, render_html
from medplib.eval.predictions import (
    PredictionRecord,
    decode_mask_entry,
    read_predictions,
    write_predictions,
)
from medplib.eval.render import mask_contour, overlay_rgb, png_base64, union_masks
from medplib.eval.runner import RunResult, run_model
from medplib.eval.scoring import Scores, aggregate_text, grounding_record, score, text_record

__all__ = [
    "REPORT_FORMAT",
    "EvalConfig",
    "EvalItem",
    "EvalProblem",
    "EvalResult",
    "EvalSet",
    "Overlay",
    "PredictionRecord",
    "RunResult",
    "Scores",
    "aggregate_text",
    "build_overlays",
    "decode_mask_entry",
    "evaluate_model",
    "evaluate_predictions",
    "grounding_record",
    "load_eval_set",
    "mask_contour",
    "overlay_rgb",
    "png_base64",
    "predictions_path_for",
    "read_predictions",
    "render_html",
    "run_model",
    "score",
    "select_cases",
    "text_record",
    "union_masks",
    "write_predictions",
    "write_report",
]
