"""benchmarks/contour_grid.py: best, median and worst answers per source, outlined on the images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from eval_helpers import rect, write_scored_split
from PIL import Image
from script_helpers import load_benchmark

from medplib.eval.render import PREDICTION_RGB, TARGET_RGB
from medplib.masks import encode_rle

HW = (16, 16)
TARGET = rect(HW, (4, 12, 4, 12))  # 64 px
# Per record: the mask at > 0.5. Dice against TARGET: 1, 2*32/96, 2*16/80, 0.
PREDICTED_05 = {
    "a0": rect(HW, (4, 12, 4, 12)),
    "a1": rect(HW, (4, 8, 4, 12)),
    "a2": rect(HW, (4, 6, 4, 12)),
    "a3": rect(HW, (0, 3, 0, 3)),
}


def _eval_folder(tmp_path: Path) -> tuple[Path, Path]:
    def answer(mask: np.ndarray) -> dict:
        return {
            "answer": "It is <SEG>.",
            "masks": [encode_rle(TARGET)],  # at > 0.1 every answer is perfect
            "masks_by_threshold": {"0.5": [encode_rle(mask)]},
            "threshold": 0.1,
        }

    answers = {rid: ("srcA", answer(mask)) for rid, mask in PREDICTED_05.items()}
    answers["s0"] = ("synthetic", answer(TARGET))
    return write_scored_split(tmp_path, "holdout", TARGET, answers)


def test_grid_shows_best_median_and_worst_by_dice_at_the_threshold(tmp_path: Path, capsys):
    grid = load_benchmark("contour_grid")
    corpus, out = _eval_folder(tmp_path)
    png = tmp_path / "grid.png"
    args = ["--eval", str(out), "--corpus", str(corpus), "--out", str(png), "--side", "32"]
    assert grid.main(args) == 0, capsys.readouterr().err
    listing = json.loads(png.with_suffix(".json").read_text())
    # Synthetic items are left out; 4 samples: best a0, median index 2 (a2), worst a3.
    assert [(c["source"], c["rank"], c["id"]) for c in listing] == [
        ("srcA", "best", "a0"),
        ("srcA", "median", "a2"),
        ("srcA", "worst", "a3"),
    ]
    assert [round(c["dice"], 4) for c in listing] == [1.0, round(32 / 80, 4), 0.0]
    image = np.asarray(Image.open(png).convert("RGB"))
    pad, side, label = grid.PAD_PX, 32, grid.LABEL_PX
    assert image.shape == (pad + side + label + pad, pad + 3 * (side + pad), 3)

    def tile(col: int) -> np.ndarray:
        x0 = pad + col * (side + pad)
        return image[pad : pad + side, x0 : x0 + side]

    def has(t: np.ndarray, colour: tuple[int, int, int]) -> bool:
        return bool((t == np.asarray(colour)).all(axis=-1).any())

    # Best: the prediction's outline lies under the reference's, so only green shows.
    assert has(tile(0), TARGET_RGB) and not has(tile(0), PREDICTION_RGB)
    # Worst: a disjoint prediction, both outlines.
    assert has(tile(2), TARGET_RGB) and has(tile(2), PREDICTION_RGB)

    # At the primary threshold (> 0.1) every answer was perfect: the ranking follows the flag.
    assert grid.main([*args, "--threshold", "0.1", "--with-synthetic"]) == 0
    dice = {c["id"]: c["dice"] for c in json.loads(png.with_suffix(".json").read_text())}
    assert set(dice.values()) == {1.0} and "s0" in dice


def test_missing_eval_or_threshold_is_a_clear_error(tmp_path: Path, capsys):
    grid = load_benchmark("contour_grid")
    corpus, out = _eval_folder(tmp_path)
    base = ["--corpus", str(corpus), "--out", str(tmp_path / "g.png")]
    assert grid.main(["--eval", str(tmp_path / "nowhere"), *base]) == 2
    assert "make demo-eval" in capsys.readouterr().err
    assert grid.main(["--eval", str(out), *base, "--threshold", "0.3"]) == 2
    assert "no Dice at threshold 0.3" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()
