"""benchmarks/mask_confidence.py: a mask's score and mirror agreement read against its Dice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from eval_helpers import rect, write_scored_split
from script_helpers import load_benchmark

from medplib.masks import encode_rle

conf = load_benchmark("mask_confidence")

HW = (16, 16)
TARGET = rect(HW, (4, 12, 4, 12))  # 64 px
# Per record: mask at > 0.5, its score, its mirror agreement. Dice: 1, 2/3, 0.4, 0.
CASES = {
    "a0": (rect(HW, (4, 12, 4, 12)), 0.9, 0.95),
    "a1": (rect(HW, (4, 8, 4, 12)), 0.8, 0.8),
    "a2": (rect(HW, (4, 6, 4, 12)), 0.7, 0.6),
    "a3": (rect(HW, (0, 3, 0, 3)), 0.6, 0.1),
}


def test_ties_share_their_mean_rank():
    assert conf.average_ranks([3, 1, 2, 2]).tolist() == [4.0, 1.0, 2.5, 2.5]


def test_rank_correlation():
    assert conf.spearman([1, 2, 3, 4], [10, 20, 30, 99]) == pytest.approx(1.0)
    assert conf.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert conf.spearman([1, 1, 1], [1, 2, 3]) is None  # nothing to rank
    assert conf.spearman([1, 2], [1, 2]) is None
    with pytest.raises(ValueError):
        conf.spearman([1, 2, 3], [1, 2])


def test_auroc_counts_the_pairs_a_signal_orders_right():
    assert conf.auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert conf.auroc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    # Positives 0.35 and 0.8 against negatives 0.1 and 0.4: three of four pairs in order.
    assert conf.auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert conf.auroc([0.5, 0.5], [True, False]) == 0.5  # a tie counts half
    assert conf.auroc([0.5, 0.7], [True, True]) is None


def test_bands_are_half_open_and_the_last_holds_one():
    rows = conf.band_means([0.2, 0.6, 0.7, 1.0, 0.9], [0.1, 0.5, 0.8, 0.9, 0.7])
    assert [r["n"] for r in rows] == [1, 1, 1, 2]
    assert [r["mean_dice"] for r in rows] == pytest.approx([0.1, 0.5, 0.8, 0.8])
    assert conf.band_means([], [])[0] == {"band": [0.0, 0.5], "n": 0, "mean_dice": None}


def _eval_folder(tmp_path: Path, *, with_extras: bool = True) -> Path:
    def answer(masks_05: list[np.ndarray], scores: list, agreements: list) -> dict:
        line = {
            "answer": " ".join(["<SEG>"] * len(masks_05)),
            "masks": [encode_rle(TARGET)] * len(masks_05),
            "masks_by_threshold": {"0.5": [encode_rle(m) for m in masks_05]},
            "threshold": 0.1,
        }
        if with_extras:
            line |= {"mask_scores": scores, "mirror_agreement": agreements}
        return line

    answers = {
        rid: ("srcA", answer([mask], [score], [agreement]))
        for rid, (mask, score, agreement) in CASES.items()
    }
    # Two masks: the evaluator scores their union, so no one number is read for it.
    answers["two"] = ("srcA", answer([TARGET, TARGET], [0.1, 0.1], [0.0, 0.0]))
    answers["s0"] = ("synthetic", answer([TARGET], [0.99], [None]))
    return write_scored_split(tmp_path, "val", TARGET, answers)[1]


def test_a_split_is_read_against_dice_at_the_threshold(tmp_path: Path, capsys):
    folder = _eval_folder(tmp_path)
    out = tmp_path / "confidence.json"
    assert conf.main(["--eval", str(folder), "--split", "val", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    real, synthetic = doc["groups"]["real"], doc["groups"]["synthetic"]
    assert real["n"] == 4  # "two" left out
    assert real["mean_dice"] == pytest.approx((1 + 2 / 3 + 0.4 + 0) / 4)
    assert real["usable_share"] == 0.5
    assert real["score"] == {"spearman": pytest.approx(1.0), "auroc_usable": 1.0}
    mirror = real["mirror_agreement"]
    assert mirror["n"] == 4 and mirror["auroc_usable"] == 1.0
    assert [b["mean_dice"] for b in mirror["bands"]] == pytest.approx([0.0, 0.4, 2 / 3, 1.0])
    assert doc["groups"]["srcA"] == real
    # The synthetic answer had no mirror check: no agreement block, one item, nothing to rank.
    assert synthetic["n"] == 1 and "mirror_agreement" not in synthetic
    assert synthetic["score"]["spearman"] is None
    assert "| real | 4 | 0.517 | 1.000 | 1.000 | 1.000 | 1.000 |" in capsys.readouterr().out


def test_an_evaluation_from_before_the_scores_were_kept_is_refused(tmp_path: Path, capsys):
    folder = _eval_folder(tmp_path, with_extras=False)
    code = conf.main(["--eval", str(folder), "--split", "val", "--out", str(tmp_path / "c.json")])
    assert code == 2 and "Run the evaluation again" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()
    missing = ["--eval", str(tmp_path / "none"), "--out", str(tmp_path / "c.json")]
    assert conf.main(missing) == 2 and "make demo-eval" in capsys.readouterr().err
