from __future__ import annotations

import pytest

from serving.agreement import cohen_kappa, fleiss_kappa


def test_cohen_kappa_hand_computed():
    # 10 items; observed agreement 0.7; rater a: 6 yes/4 no, b: 5 yes/5 no.
    a = ["y"] * 6 + ["n"] * 4
    b = ["y", "y", "y", "y", "n", "n", "y", "n", "n", "n"]
    # observed = 7/10; expected = (6*5 + 4*5)/100 = 0.5; kappa = 0.2/0.5 = 0.4
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == 1.0
    assert cohen_kappa([], []) is None
    assert cohen_kappa(["x", "x"], ["x", "x"]) == 1.0


def test_fleiss_kappa_hand_computed():
    # Two items, three raters each: item 1 all "a"; item 2 two "a", one "b".
    items = [{"a": 3}, {"a": 2, "b": 1}]
    # P1 = 1, P2 = (4+1-3)/6 = 1/3, Pbar = 2/3; p_a = 5/6, p_b = 1/6; Pe = 26/36
    expected = (2 / 3 - 26 / 36) / (1 - 26 / 36)
    assert fleiss_kappa(items) == pytest.approx(expected)
    assert fleiss_kappa([{"a": 1}]) is None  # one rater per item: undefined


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        cohen_kappa([1], [1, 2])


def test_mask_agreement_pairs_reviewers_per_answer_with_hand_computed_values():
    import numpy as np

    from serving.agreement import mask_agreement

    a = np.zeros((4, 4), bool)
    a[:2, :2] = True  # 4 px
    b = np.zeros((4, 4), bool)
    b[:2, :3] = True  # 6 px, 4 shared
    empty = np.zeros((4, 4), bool)
    report = mask_agreement({"t1": {"rita": a, "sam": b}, "t2": {"rita": empty, "sam": empty}})
    rows = {r["item"]: r for r in report["rows"]}
    assert rows["t1"]["reviewers"] == ("rita", "sam")
    assert rows["t1"]["dice"] == pytest.approx(2 * 4 / 10) and rows["t1"]["iou"] == pytest.approx(
        4 / 6
    )
    assert rows["t2"]["dice"] == rows["t2"]["iou"] == 1.0  # both left it empty: they agree
    overall = report["overall"]
    assert overall["items"] == 2 and overall["pairs"] == 2
    assert overall["dice"] == pytest.approx((0.8 + 1.0) / 2)
    assert report["by_pair"][("rita", "sam")]["items"] == 2


def test_mask_agreement_needs_two_reviewers_and_same_shapes():
    import numpy as np

    from serving.agreement import mask_agreement

    one = mask_agreement({"t1": {"rita": np.ones((2, 2), bool)}})
    assert one["rows"] == [] and one["overall"]["dice"] is None
    with pytest.raises(ValueError, match="differ in shape"):
        mask_agreement({"t": {"a": np.ones((2, 2), bool), "b": np.ones((3, 2), bool)}})
