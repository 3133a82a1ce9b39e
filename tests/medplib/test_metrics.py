from __future__ import annotations

import math

import numpy as np
import pytest

from medplib.metrics import (
    EMPTY_BOTH_SCORE,
    EMPTY_MASK_RULE,
    EMPTY_ONE_SCORE,
    aggregate_segmentation,
    bleu,
    closed_accuracy,
    dice,
    exact_match,
    intersection_union,
    iou,
    normalize_answer,
    rouge_l,
    segmentation_record,
    token_f1,
)


def _mask(shape, *cells):
    mask = np.zeros(shape, dtype=bool)
    for r, c in cells:
        mask[r, c] = True
    return mask


def test_non_square_overlap():
    pred = np.array([[1, 1, 0], [0, 1, 0]], dtype=bool)  # (2, 3)
    target = np.array([[1, 0, 0], [0, 1, 1]], dtype=bool)
    # |P & T| = 2 ((0,0), (1,1)), |P| = |T| = 3, |P | T| = 4.
    assert intersection_union(pred, target) == (2, 4)
    assert iou(pred, target) == pytest.approx(0.5)
    assert dice(pred, target) == pytest.approx(4 / 6)


def test_empty_mask_rule():
    empty, full = np.zeros((3, 7), dtype=bool), np.ones((3, 7), dtype=bool)
    assert dice(empty, empty) == iou(empty, empty) == EMPTY_BOTH_SCORE == 1.0
    assert dice(empty, full) == iou(empty, full) == EMPTY_ONE_SCORE == 0.0
    assert dice(full, empty) == iou(full, empty) == 0.0
    assert intersection_union(empty, empty) == (0, 0)
    assert "both" in EMPTY_MASK_RULE and "= 1" in EMPTY_MASK_RULE and "= 0" in EMPTY_MASK_RULE
    assert "both masks empty -> 1.0" in (dice.__doc__ or "") + (iou.__doc__ or "")


def test_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(2, 3\) differs from target shape \(3, 2\)"):
        dice(np.zeros((2, 3)), np.zeros((3, 2)))


def _records():
    big = np.zeros((20, 20), dtype=bool)
    big[0:10, 0:10] = True  # 100 px
    a = segmentation_record(big, big, modality="CT", source="s1")  # perfect on a large mask
    b = segmentation_record(  # a 1-px miss on a tiny mask
        _mask((20, 20), (15, 15)), _mask((20, 20), (18, 18)), modality="MR", source="s1"
    )
    empty = np.zeros((20, 20), dtype=bool)
    c = segmentation_record(empty, empty, modality="CT", source="s2")  # nothing to find
    return [a, b, c]


def test_record_fields():
    a, b, c = _records()
    assert a == {
        "dice": 1.0,
        "iou": 1.0,
        "intersection": 100,
        "union": 100,
        "pred_area": 100,
        "target_area": 100,
        "modality": "CT",
        "source": "s1",
    }
    assert (b["dice"], b["iou"], b["intersection"], b["union"]) == (0.0, 0.0, 0, 2)
    assert (c["dice"], c["iou"], c["union"]) == (1.0, 1.0, 0)


def test_aggregate_micro_macro_cumulative():
    result = aggregate_segmentation(_records())
    assert result["count"] == 3
    assert result["mDice"] == pytest.approx(2 / 3)  # (1 + 0 + 1) / 3
    assert result["mIoU"] == pytest.approx(2 / 3)
    # Macro: CT mean (1 + 1) / 2 = 1, MR mean 0 -> 0.5.
    assert result["macro_mDice"] == pytest.approx(0.5)
    assert result["macro_mIoU"] == pytest.approx(0.5)
    assert result["median_dice"] == 1.0 and result["median_iou"] == 1.0
    # Cumulative: 2 * 100 / (200 + 2 + 0) and 100 / (100 + 2 + 0), dominated by the big mask.
    assert result["cDice"] == pytest.approx(200 / 202)
    assert result["cIoU"] == pytest.approx(100 / 102)
    assert result["cDice"] > result["mDice"] + 0.3
    assert result["gIoU"] == pytest.approx(2 / 3)
    ct, mr = result["per_modality"]["CT"], result["per_modality"]["MR"]
    assert (ct["count"], ct["mDice"], ct["cDice"]) == (2, 1.0, 1.0)
    assert (mr["count"], mr["mDice"], mr["cIoU"]) == (1, 0.0, 0.0)
    s1 = result["per_source"]["s1"]
    assert s1["count"] == 2 and s1["mDice"] == pytest.approx(0.5)
    assert result["per_source"]["s2"]["cDice"] == 1.0  # all-empty group follows the empty rule
    assert result["empty_mask_rule"] == EMPTY_MASK_RULE


def test_aggregate_gIoU_from_counts_and_validation():
    records = _records()
    records[1] = {**records[1], "iou": 0.25}  # a record whose stored IoU disagrees
    result = aggregate_segmentation(records)
    assert result["mIoU"] == pytest.approx((1 + 0.25 + 1) / 3)
    assert result["gIoU"] == pytest.approx(2 / 3)  # recomputed from intersection / union
    with pytest.raises(ValueError, match="No segmentation records"):
        aggregate_segmentation([])
    with pytest.raises(ValueError, match="Record 0 lacks modality"):
        aggregate_segmentation([{k: v for k, v in records[0].items() if k != "modality"}])


def test_normalize_answer():
    assert (
        normalize_answer("The Liver isn't enlarged, it's 3.5 cm!")
        == "liver is not enlarged it is 3.5 cm"
    )
    assert normalize_answer("Two lesions; 1,000 cells.") == "2 lesions 1000 cells"
    assert normalize_answer("An X-ray of a patient's chest.") == "x ray of patients chest"
    assert normalize_answer("Isnt it  TWENTY\tor forty?") == "is not it 20 or 40"
    assert normalize_answer("It doesn\u2019t; can't, won't") == "it does not cannot will not"
    assert normalize_answer("zero three twelve ninety") == "0 3 12 90"
    assert normalize_answer("...") == ""
    assert normalize_answer("the end. 2.") == "end 2"  # a sentence-final point is punctuation


def test_closed_accuracy():
    assert closed_accuracy("Yes, the liver is enlarged.", "yes") == 1.0
    assert closed_accuracy("No.", "Yes") == 0.0
    assert closed_accuracy("no", "No") == 1.0
    assert closed_accuracy("Left Lung.", "left lung") == 1.0
    assert closed_accuracy("left", "left lung") == 0.0
    assert closed_accuracy("", "yes") == 0.0
    assert closed_accuracy("maybe yes", "yes") == 0.0  # only the first word decides


def test_exact_match_and_token_f1():
    assert exact_match("The liver.", "liver") == 1.0
    assert exact_match("liver", "spleen") == 0.0
    # tokens: [liver, is, large] vs [liver, is, small, and, large]: 3 in common.
    scores = token_f1("the liver is large", "liver is small and large")
    assert scores["precision"] == pytest.approx(1.0)
    assert scores["recall"] == pytest.approx(3 / 5)
    assert scores["f1"] == pytest.approx(2 * 0.6 / 1.6)
    assert token_f1("", "") == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert token_f1("liver", "")["f1"] == 0.0
    # Repeated tokens are clipped: "no no no" vs "no" -> 1 match of 3.
    assert token_f1("no no no", "no")["precision"] == pytest.approx(1 / 3)


PRED = "liver shows small lesion near portal vein"  # 7 tokens
REF = "liver shows lesion near portal vein"  # 6 tokens


def test_bleu_hand_computed_unsmoothed():
    # Matches: 1-grams 6/7 ("small" missing from the reference); 2-grams 4/6 (liver shows,
    # lesion near, near portal, portal vein); 3-grams 2/5 (lesion near portal, near portal
    # vein); 4-grams 1/4 (lesion near portal vein). The prediction is longer: BP = 1.
    result = bleu(PRED, REF, smooth=False)
    assert result["brevity_penalty"] == 1.0
    assert [result[f"precision_{n}"] for n in range(1, 5)] == pytest.approx(
        [6 / 7, 4 / 6, 2 / 5, 1 / 4]
    )
    assert result["bleu_1"] == pytest.approx(6 / 7)
    assert result["bleu_2"] == pytest.approx(math.sqrt(6 / 7 * 4 / 6))
    assert result["bleu_3"] == pytest.approx((6 / 7 * 4 / 6 * 2 / 5) ** (1 / 3))
    assert result["bleu_4"] == pytest.approx((6 / 7 * 4 / 6 * 2 / 5 * 1 / 4) ** 0.25)
    assert result["bleu_4"] == pytest.approx(0.48892, abs=1e-5)


def test_bleu_hand_computed_smoothed():
    # Add-one for n > 1: 2-grams (4+1)/(6+1), 3-grams (2+1)/(5+1), 4-grams (1+1)/(4+1).
    result = bleu(PRED, REF)
    assert result["bleu_1"] == pytest.approx(6 / 7)
    assert result["bleu_4"] == pytest.approx((6 / 7 * 5 / 7 * 3 / 6 * 2 / 5) ** 0.25)
    assert result["precision_2"] == pytest.approx(4 / 6)  # reported precisions stay raw


def test_bleu_brevity_penalty_and_short_answers():
    # "liver lesion" vs the 6-token reference: c = 2, r = 6 -> BP = exp(1 - 6/2) = e^-2.
    # p1 = 2/2; the bigram "liver lesion" is not in the reference: p2 = 0 (smoothed 1/2);
    # no 3- or 4-grams: smoothed (0+1)/(0+1) = 1.
    short = bleu("liver lesion", REF)
    assert short["brevity_penalty"] == pytest.approx(math.exp(-2))
    assert short["bleu_1"] == pytest.approx(math.exp(-2))
    assert short["bleu_4"] == pytest.approx(math.exp(-2) * 0.5**0.25)
    assert bleu("liver lesion", REF, smooth=False)["bleu_4"] == 0.0
    assert bleu("Yes.", "yes")["bleu_4"] == 1.0
    assert bleu("Yes.", "yes", smooth=False)["bleu_4"] == 0.0  # no 2-grams at all
    assert bleu("no", "yes")["bleu_4"] == 0.0
    assert bleu("", "yes")["bleu_1"] == 0.0
    assert bleu("the", "a")["bleu_2"] == 1.0  # both normalise to empty
    assert set(bleu(PRED, REF, max_n=2)) == {
        "bleu_1",
        "bleu_2",
        "precision_1",
        "precision_2",
        "brevity_penalty",
    }
    with pytest.raises(ValueError, match="max_n"):
        bleu(PRED, REF, max_n=0)


def test_rouge_l():
    scores = rouge_l(PRED, REF)  # LCS = the 6 reference tokens
    assert scores["precision"] == pytest.approx(6 / 7)
    assert scores["recall"] == pytest.approx(1.0)
    assert scores["f1"] == pytest.approx(12 / 13)
    reversed_scores = rouge_l("vein portal near", "near portal vein")  # LCS = 1
    assert reversed_scores == pytest.approx({"precision": 1 / 3, "recall": 1 / 3, "f1": 1 / 3})
    assert rouge_l("", "") == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert rouge_l("liver", "spleen")["f1"] == 0.0


def test_image_bootstrap_interval():
    from medplib.metrics import image_bootstrap_ci

    assert image_bootstrap_ci([], []) is None
    assert image_bootstrap_ci([0.4, 0.4, 0.4], ["a", "b", "c"]) == pytest.approx((0.4, 0.4))
    # Many images of values 0 and 1: the interval brackets the mean and narrows with n.
    values = [float(k % 2) for k in range(400)]
    wide = image_bootstrap_ci(values[:40], [str(k) for k in range(40)], seed=1)
    narrow = image_bootstrap_ci(values, [str(k) for k in range(400)], seed=1)
    assert wide[0] < narrow[0] < 0.5 < narrow[1] < wide[1]
    assert image_bootstrap_ci(values, [str(k) for k in range(400)], seed=1) == narrow
    # The same 400 values on two images only: the interval spans what two images can say.
    two = image_bootstrap_ci(values, ["even" if k % 2 == 0 else "odd" for k in range(400)])
    assert two == (0.0, 1.0)
    with pytest.raises(ValueError, match="image names"):
        image_bootstrap_ci([1.0], [])
    with pytest.raises(ValueError, match="level"):
        image_bootstrap_ci([1.0], ["a"], level=1.0)


def test_mean_of_groups_interval_resamples_each_group_on_its_own():
    from medplib.metrics import mean_of_groups_ci

    assert mean_of_groups_ci({}) is None
    assert mean_of_groups_ci({"a": ([], [])}) is None
    steady = mean_of_groups_ci({"a": ([0.2], ["x"]), "b": ([0.6, 0.6], ["y", "z"])})
    assert steady == pytest.approx((0.4, 0.4))  # the mean of the two means, not of 3 values
    # Group a: two images, 0 and 1 (draw means 0, 0.5, 1); b: always 0.5. Overall (a + b) / 2.
    split = mean_of_groups_ci({"a": ([0.0, 1.0], ["p", "q"]), "b": ([0.5], ["r"]), "c": ([], [])})
    assert split == pytest.approx((0.25, 0.75))
