"""`medplib eval`: score a checkpoint, or saved predictions, on a MeCoVQA-format file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medplib.errors import UserInputError

DESCRIPTION = """\
Score grounding masks (Dice, IoU, cDice, cIoU, gIoU; micro and per-modality macro) and VQA
answers (closed accuracy, exact match, token F1, BLEU-1..4, ROUGE-L) on a MeCoVQA-format file.

  medplib eval --data holdout.json --images ROOT --out report.json --html report.html
  medplib eval --predictions peer.jsonl --data holdout.json --images ROOT --out report.json

Without --predictions the model runs (--checkpoint, default: the shipped demo or the untrained
tiny checkpoint) and its predictions are written beside the report as NAME.predictions.jsonl.
Predictions are JSON Lines: {"id": ..., "answer": ..., "masks": [PNG path under ROOT, or
COCO RLE, one per <SEG>]}. Bad records and lines are listed in the report, never fatal.
Exit status: 0 when something was scored, 1 when nothing valid was left, 2 on a bad input file.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint or saved predictions (JSON + HTML report)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument("--checkpoint", metavar="DIR", help="checkpoint directory (default: bundled)")
    what.add_argument("--predictions", metavar="FILE", help="score this predictions JSONL instead")
    p.add_argument("--data", required=True, metavar="FILE", help="MeCoVQA-format JSON file")
    p.add_argument("--images", required=True, metavar="ROOT", help="root of image and mask paths")
    p.add_argument("--out", required=True, metavar="FILE", help="JSON report to write")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="mask probability threshold for model runs (default 0.1, as MedPLIB; 0.5 is "
        "reported too)",
    )
    p.add_argument("--limit", type=int, metavar="N", help="evaluate the first N records only")
    p.add_argument("--device", default="cpu", help="torch device for model runs (default cpu)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="answer length limit")
    p.add_argument(
        "--cases", type=int, default=2, metavar="K", help="best/worst overlays per modality"
    )
    p.set_defaults(func=run)


def load_predictor(checkpoint: str | None, device: str):
    """The predictor for `checkpoint` (None: the default checkpoint) on `device`."""
    import torch

    from medplib.predictor import MedPLIBPredictor

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserInputError(
            f"--device {device!r} is not a torch device; use cpu or cuda."
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError("--device cuda was given but no CUDA GPU is available; use cpu.")
    return MedPLIBPredictor.from_pretrained(checkpoint, device=dev)


def _summary(report: dict) -> list[str]:
    lines = []
    counts = report["counts"]
    lines.append(
        f"scored {counts['scored']} of {counts['items_selected']} records "
        f"({counts['grounding']} grounding, {counts['vqa']} vqa, {counts['region']} region); "
        f"{counts['problems']} problem(s)"
    )
    g = report.get("grounding")
    if g:
        lines.append(
            f"grounding @ {g['threshold']}: mDice {g['mDice']:.4f}, macro mDice "
            f"{g['macro_mDice']:.4f}, mIoU {g['mIoU']:.4f}, cIoU {g['cIoU']:.4f}, "
            f"no <SEG> {g['no_seg_rate']:.1%}"
        )
        for label, block in g.get("by_threshold", {}).items():
            lines.append(f"grounding @ {label}: mDice {block['mDice']:.4f}")
        q = g["question_ignoring"]
        if q["count"]:
            lines.append(
                f"question-ignoring check ({q['count']} samples): Dice own target "
                f"{q['mDice_own_target']:.4f}, other target {q['mDice_other_target']:.4f}"
            )
    t = report.get("text")
    if t:
        o = t["overall"]
        acc = "-" if o["closed_accuracy"] is None else f"{o['closed_accuracy']:.4f}"
        lines.append(
            f"text: closed accuracy {acc}, exact match {o['exact_match']:.4f}, "
            f"token F1 {o['token_f1']:.4f}, BLEU-4 {o['bleu_4']:.4f}, ROUGE-L {o['rouge_l']:.4f}"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    from medplib.eval import (
        EvalConfig,
        evaluate_model,
        evaluate_predictions,
        predictions_path_for,
        write_report,
    )

    if args.limit is not None and args.limit < 1:
        raise UserInputError(f"--limit must be 1 or more; got {args.limit}.")
    if args.cases < 0:
        raise UserInputError(f"--cases must be 0 or more; got {args.cases}.")
    if args.predictions is not None:
        if args.threshold is not None:
            raise UserInputError(
                "--threshold applies to model runs only; saved predictions are binary masks "
                "already (add masks_by_threshold to them to score other thresholds)."
            )
        result = evaluate_predictions(args.predictions, args.data, args.images, limit=args.limit)
        preds_out = None
    else:
        threshold = 0.1 if args.threshold is None else args.threshold
        if not 0.0 < threshold < 1.0:
            raise UserInputError(f"--threshold must be between 0 and 1; got {threshold}.")
        if not 1 <= args.max_new_tokens <= 4096:
            raise UserInputError(f"--max-new-tokens must be 1..4096; got {args.max_new_tokens}.")
        config = EvalConfig(
            threshold=threshold, max_new_tokens=args.max_new_tokens, limit=args.limit
        )
        # The data file is checked before the (slower) model load.
        from medplib.eval import load_eval_set

        eval_set = load_eval_set(args.data, args.images, limit=args.limit)
        predictor = load_predictor(args.checkpoint, args.device)

        def progress(done: int, total: int) -> None:
            if done == total or done % 25 == 0:
                print(f"medplib eval: {done}/{total}", file=sys.stderr)

        result = evaluate_model(
            predictor,
            args.data,
            args.images,
            config=config,
            progress=progress,
            inputs={"checkpoint": args.checkpoint, "device": args.device},
            eval_set=eval_set,
        )
        preds_out = predictions_path_for(args.out)
    written = write_report(
        result,
        Path(args.out),
        html_path=args.html,
        predictions_path=preds_out,
        cases_per_modality=args.cases,
    )
    for line in _summary(result.report):
        print(line)
    for name, path in written.items():
        print(f"{name}: {path}")
    for problem in result.report["problems"][:10]:
        print(
            f"medplib eval: {problem['stage']} #{problem['index']} (id {problem['id']}): "
            f"{problem['reason']}",
            file=sys.stderr,
        )
    if len(result.report["problems"]) > 10:
        print(
            f"medplib eval: {len(result.report['problems']) - 10} more problem(s) in {args.out}",
            file=sys.stderr,
        )
    return 0 if result.scored else 1
