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
