"""How far a mask's own confidence signals tell a good mask from a bad one.

The web app shows two numbers beside each mask: ``score`` (mean sigmoid probability inside the
mask) and, where the checkpoint checks its masks against the mirrored image, ``mirror
agreement`` (Dice between the masks decoded on the image and on its mirror). Evaluation
reports keep both per case; this reads the grounding report `python -m medplib.eval.corpus`
wrote for one split and measures each number against the Dice the mask turned out to have: rank correlation, the area under the ROC curve for telling a
usable mask (Dice >= 0.5) from an unusable one, and mean Dice per agreement band.

    python benchmarks/mask_confidence.py --eval var/demo-eval/val-holdout --split val \\
        --out var/demo-eval/mask-confidence-val.json

Only answers with exactly one mask are read (the evaluator scores several as their union, and
no single number then belongs to it). Prints a Markdown table; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medplib.eval.scoring import dice_key

# Mean Dice is reported per band of mirror agreement; 0.7 is the demo's averaging gate.
AGREEMENT_BANDS = ((0.0, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.0))
USABLE_DICE = 0.5  # a mask a teacher would accept as outlining the structure, roughly


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank (what Spearman's rho and the AUC need)."""
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation; None when either side is constant or has < 3 values."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} values against {len(b)}")
    if len(a) < 3:
        return None
    ra, rb = average_ranks(a), average_ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def auroc(signal: Sequence[float], positive: Sequence[bool]) -> float | None:
    """Chance that a positive item's signal exceeds a negative one's (ties count half).

    None when every item is positive or every one negative: there is nothing to tell apart.
    """
    if len(signal) != len(positive):
        raise ValueError(f"{len(signal)} values against {len(positive)} labels")
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = average_ranks(signal)
    # Mann-Whitney U of the positives, scaled to [0, 1].
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def band_means(
    agreement: Sequence[float], dice: Sequence[float], bands=AGREEMENT_BANDS
) -> list[dict[str, Any]]:
    """Count and mean Dice per agreement band [lo, hi) (the last band includes 1.0)."""
    a, d = np.asarray(agreement, dtype=float), np.asarray(dice, dtype=float)
    rows = []
    for k, (lo, hi) in enumerate(bands):
        inside = (a >= lo) & ((a < hi) | (k == len(bands) - 1) & (a <= hi))
        n = int(inside.sum())
        rows.append({"band": [lo, hi], "n": n, "mean_dice": float(d[inside].mean()) if n else None})
    return rows


def single_mask_rows(samples: Sequence[Mapping[str, Any]], dice_key: str) -> list[dict[str, Any]]:
    """(source, Dice, score, agreement) of each grounding answer with exactly one mask."""
    rows = []
    for s in samples:
        if s.get("task", "grounding") != "grounding" or s.get("num_masks") != 1:
            continue
        scores, agreements = s.get("mask_scores") or [], s.get("mirror_agreement") or []
        if len(scores) != 1 or scores[0] is None or s.get(dice_key) is None:
            continue
        rows.append(
            {
                "source": s["source"],
                "dice": float(s[dice_key]),
                "score": float(scores[0]),
                "agreement": None if not agreements else agreements[0],
            }
        )
    return rows


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The signals against Dice for one group of single-mask answers."""
    dice = [r["dice"] for r in rows]
    usable = [d >= USABLE_DICE for d in dice]
    out: dict[str, Any] = {
        "n": len(rows),
        "mean_dice": float(np.mean(dice)) if rows else None,
        "usable_share": float(np.mean(usable)) if rows else None,
        "score": {
            "spearman": spearman([r["score"] for r in rows], dice),
            "auroc_usable": auroc([r["score"] for r in rows], usable),
        },
    }
    checked = [r for r in rows if r["agreement"] is not None]
    if checked:
        a = [float(r["agreement"]) for r in checked]
        d = [r["dice"] for r in checked]
        out["mirror_agreement"] = {
            "n": len(checked),
            "spearman": spearman(a, d),
            "auroc_usable": auroc(a, [x >= USABLE_DICE for x in d]),
            "bands": band_means(a, d),
        }
    return out


def _fmt(value: float | None) -> str:
    return (
        "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
    )


def markdown(groups: Mapping[str, Mapping[str, Any]]) -> str:
    head = "| group | n | mean Dice | score ρ | score AUC | agreement ρ | agreement AUC |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for name, g in groups.items():
        m = g.get("mirror_agreement") or {}
        lines.append(
            f"| {name} | {g['n']} | {_fmt(g['mean_dice'])} | {_fmt(g['score']['spearman'])} | "
            f"{_fmt(g['score']['auroc_usable'])} | {_fmt(m.get('spearman'))} | "
            f"{_fmt(m.get('auroc_usable'))} |"
        )
    bands = " | ".join(f"agreement {lo}–{hi}" for lo, hi in AGREEMENT_BANDS)
    lines += ["", f"| group | {bands} |"]
    lines.append("|---|" + "---:|" * len(AGREEMENT_BANDS))
    for name, g in groups.items():
        bands = (g.get("mirror_agreement") or {}).get("bands") or []
        cells = [f"{_fmt(b['mean_dice'])} (n {b['n']})" for b in bands]
        if cells:
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--eval", type=Path, required=True, help="a medplib.eval.corpus --out folder")
    p.add_argument("--split", default="val")
    p.add_argument("--threshold", default="0.5", help="the mask threshold whose Dice is read")
    p.add_argument("--out", type=Path, required=True, help="the JSON to write")
    args = p.parse_args(argv)
    report_path = args.eval / f"{args.split}-grounding.json"
    if not report_path.is_file():
        print(f"error: {report_path} does not exist; run `make demo-eval` first.", file=sys.stderr)
        return 2
    report = json.loads(report_path.read_text())
    try:
        key = dice_key(report, args.threshold)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not any("mask_scores" in s for s in report["samples"]):
        print(
            f"error: {report_path} has no per-mask scores; it was written before they were "
            "recorded. Run the evaluation again.",
            file=sys.stderr,
        )
        return 2
    rows = single_mask_rows(report["samples"], key)
    if not rows:
        print("error: no grounding answer with exactly one mask.", file=sys.stderr)
        return 2
    groups: dict[str, Any] = {
        "synthetic": summarise([r for r in rows if r["source"] == "synthetic"]),
        "real": summarise([r for r in rows if r["source"] != "synthetic"]),
    }
    for source in sorted({r["source"] for r in rows} - {"synthetic"}):
        groups[source] = summarise([r for r in rows if r["source"] == source])
    doc = {
        "eval": str(args.eval),
        "split": args.split,
        "threshold": args.threshold,
        "checkpoint_id": report.get("inputs", {}).get("checkpoint_id"),
        "flip_tta_min_agreement": report.get("inputs", {}).get("flip_tta_min_agreement"),
        "usable_dice": USABLE_DICE,
        "groups": groups,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(markdown(groups))
    return 0


if __name__ == "__main__":
    sys.exit(main())
