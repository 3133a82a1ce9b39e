"""Best, median and worst grounding answers per source, as outlines on the images.

Reads what `make demo-eval` (`python -m medplib.eval.corpus`) wrote for one split and draws,
for every source, its best, median and worst grounding answer by Dice: the reference outlined
in green, the prediction in red-orange. A reader sees what a source's mDice means.

    python benchmarks/contour_grid.py --eval var/demo-eval/val-holdout \\
        --corpus var/demo-corpus --split holdout --out var/demo-eval/holdout-contours.png

Writes the PNG and, beside it, a JSON list of the cases shown (id, source, rank, Dice).
Synthetic items are left out unless `--with-synthetic`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from medplib.data.files import load_image_rgb
from medplib.eval.dataset import EvalSet, load_eval_set
from medplib.eval.predictions import decode_mask_entry, read_predictions
from medplib.eval.render import contours_rgb, union_masks
from medplib.eval.scoring import dice_key

RANKS = ("best", "median", "worst")
LABEL_PX = 14  # a text line under each tile
PAD_PX = 4


def pick_cases(
    samples: Sequence[Mapping[str, Any]], key: str, *, with_synthetic: bool = False
) -> dict[str, list[tuple[str, Mapping[str, Any]]]]:
    """Per source (sorted): [("best", s), ("median", s), ("worst", s)] by `key`.

    Ties keep file order (a stable sort), so the same report always gives the same picture.
    A source with fewer than three samples shows each once.
    """
    by_source: dict[str, list[Mapping[str, Any]]] = {}
    for s in samples:
        if s.get("task", "grounding") != "grounding" or s.get(key) is None:
            continue
        if s["source"] == "synthetic" and not with_synthetic:
            continue
        by_source.setdefault(str(s["source"]), []).append(s)
    out = {}
    for source, group in sorted(by_source.items()):
        ranked = sorted(group, key=lambda s: -float(s[key]))  # best first
        picks = {"best": 0, "median": len(ranked) // 2, "worst": len(ranked) - 1}
        seen: set[int] = set()
        out[source] = []
        for rank in RANKS:
            k = picks[rank]
            if k not in seen:
                seen.add(k)
                out[source].append((rank, ranked[k]))
    return out


def _tile(rgb: np.ndarray, caption: str, side_px: int) -> Image.Image:
    tile = Image.new("RGB", (side_px, side_px + LABEL_PX), (255, 255, 255))
    shown = Image.fromarray(rgb)
    tile.paste(shown, ((side_px - shown.width) // 2, (side_px - shown.height) // 2))
    ImageDraw.Draw(tile).text((2, side_px + 1), caption, fill=(0, 0, 0))
    return tile


def draw_grid(
    cases: Mapping[str, Sequence[tuple[str, Mapping[str, Any]]]],
    eval_set: EvalSet,
    masks_of: Mapping[str, list],
    key: str,
    *,
    side_px: int = 128,
) -> Image.Image:
    """One row per source, one column per rank; each tile captioned "source rank Dice"."""
    items = eval_set.by_id
    rows = len(cases)
    grid = Image.new(
        "RGB",
        (len(RANKS) * (side_px + PAD_PX) + PAD_PX, rows * (side_px + LABEL_PX + PAD_PX) + PAD_PX),
        (255, 255, 255),
    )
    for r, (source, picked) in enumerate(cases.items()):
        for rank, sample in picked:
            item = items[str(sample["id"])]
            image = load_image_rgb(eval_set.image_path(item))  # (H, W, 3) uint8
            target = eval_set.target_mask(item.target_paths, item.image_hw)
            predicted = union_masks(
                [
                    decode_mask_entry(e, eval_set.image_root, item.image_hw)
                    for e in masks_of[item.id]
                ],
                item.image_hw,
            )
            caption = f"{source[:10]} {rank} {float(sample[key]):.2f}"  # fits a 128 px tile
            tile = _tile(contours_rgb(image, target, predicted, side_px=side_px), caption, side_px)
            c = RANKS.index(rank)
            grid.paste(
                tile, (PAD_PX + c * (side_px + PAD_PX), PAD_PX + r * (side_px + LABEL_PX + PAD_PX))
            )
    return grid


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--eval", type=Path, required=True, help="a medplib.eval.corpus --out folder")
    p.add_argument("--corpus", type=Path, required=True, help="the corpus it was scored on")
    p.add_argument("--split", default="holdout")
    p.add_argument("--threshold", default="0.5", help="mask threshold whose Dice ranks the cases")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    p.add_argument("--side", type=int, default=128, help="tile side in pixels")
    p.add_argument("--with-synthetic", action="store_true")
    args = p.parse_args(argv)
    report_path = args.eval / f"{args.split}-grounding.json"
    predictions_path = args.eval / f"{args.split}-grounding.predictions.jsonl"
    for path in (report_path, predictions_path, args.corpus / "grounding" / f"{args.split}.json"):
        if not path.is_file():
            print(f"error: {path} does not exist; run `make demo-eval` first.", file=sys.stderr)
            return 2
    report = json.loads(report_path.read_text())
    try:
        key = dice_key(report, args.threshold)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    records, _ = read_predictions(predictions_path)
    masks_of = {
        r.id: (r.masks if key == "dice" else r.masks_by_threshold.get(args.threshold, []))
        for r in records
    }
    cases = pick_cases(report["samples"], key, with_synthetic=args.with_synthetic)
    if not cases:
        print("error: no grounding samples to show.", file=sys.stderr)
        return 2
    eval_set = load_eval_set(args.corpus / "grounding" / f"{args.split}.json", args.corpus)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    draw_grid(cases, eval_set, masks_of, key, side_px=args.side).save(args.out, optimize=True)
    listing = [
        {"source": s, "rank": rank, "id": c["id"], "dice": c[key], "image": c.get("image")}
        for s, picked in cases.items()
        for rank, c in picked
    ]
    args.out.with_suffix(".json").write_text(json.dumps(listing, indent=2) + "\n")
    print(f"{args.out}: {len(cases)} sources, {len(listing)} cases (Dice at > {args.threshold})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
