"""Bradley–Terry scores, intervals and win matrices on votes with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from serving.arena_scores import SCALE, bootstrap_intervals, bradley_terry, leaderboard, win_matrix


def test_equal_records_give_equal_scores_around_1000():
    votes = [("A", "B", "a"), ("A", "B", "b"), ("B", "A", "tie")]
    scores = bradley_terry(votes)
    assert scores["A"] == pytest.approx(1000.0) and scores["B"] == pytest.approx(1000.0)


def test_two_models_score_gap_is_the_log_odds_of_winning():
    # 30 wins to 10 (plus the prior's half win each): p(A beats B) = 30.5 / 40.5 ... and the
    # Bradley–Terry gap of two models is exactly the log of those odds.
    votes = [("A", "B", "a")] * 30 + [("A", "B", "b")] * 10
    scores = bradley_terry(votes)
    expected_gap = SCALE * math.log(30.5 / 10.5)
    assert scores["A"] - scores["B"] == pytest.approx(expected_gap, rel=1e-6)
    assert (scores["A"] + scores["B"]) / 2 == pytest.approx(1000.0)


def test_ties_and_both_bad_count_half_each_way():
    matrix = win_matrix([("A", "B", "tie"), ("B", "A", "both_bad"), ("A", "B", "a")])
    assert matrix["A"]["B"] == 2.0 and matrix["B"]["A"] == 1.0 and matrix["A"]["A"] == 0.0


def test_three_models_recover_their_order_from_simulated_votes():
    rng = np.random.default_rng(1)
    true = {"good": 1.0, "fair": 0.0, "poor": -1.0}  # log-strengths
    votes = []
    for _ in range(600):
        a, b = rng.choice(list(true), size=2, replace=False)
        p_a = 1 / (1 + math.exp(true[b] - true[a]))
        votes.append((a, b, "a" if rng.random() < p_a else "b"))
    scores = bradley_terry(votes)
    assert scores["good"] > scores["fair"] > scores["poor"]
    # Recovered gaps near the true ones (1 natural-log unit = SCALE points).
    assert (scores["good"] - scores["poor"]) / SCALE == pytest.approx(2.0, abs=0.35)


def test_two_hundred_votes_for_a_better_model_give_intervals_that_exclude_a_tie():
    rng = np.random.default_rng(7)
    votes = []
    for _ in range(200):  # the better stand-in wins 70 %, 10 % are ties
        r = rng.random()
        outcome = "a" if r < 0.63 else ("tie" if r < 0.73 else "b")
        votes.append(
            ("better", "worse", outcome)
            if rng.random() < 0.5
            else ("worse", "better", {"a": "b", "b": "a", "tie": "tie"}[outcome])
        )
    rows = leaderboard(votes, rounds=300)
    assert [r["model"] for r in rows] == ["better", "worse"]
    lo_better, _ = rows[0]["interval"]
    _, hi_worse = rows[1]["interval"]
    assert lo_better > 1000.0 > hi_worse  # neither interval reaches the tie
    assert rows[0]["votes"] == rows[1]["votes"] == 200
    assert rows[0]["wins"] == rows[1]["losses"] and rows[0]["ties"] == rows[1]["ties"]


def test_intervals_are_reproducible_and_contain_the_score():
    votes = [("A", "B", "a")] * 12 + [("A", "B", "b")] * 8
    first = bootstrap_intervals(votes, rounds=200, seed=3)
    assert first == bootstrap_intervals(votes, rounds=200, seed=3)
    scores = bradley_terry(votes)
    for m, (lo, hi) in first.items():
        assert lo <= scores[m] <= hi


def test_bad_votes_are_refused():
    with pytest.raises(ValueError, match="unknown outcome"):
        bradley_terry([("A", "B", "maybe")])
    with pytest.raises(ValueError, match="cannot face itself"):
        bradley_terry([("A", "A", "a")])
    with pytest.raises(ValueError, match="not on the board"):
        bradley_terry([("A", "C", "a")], models=["A", "B"])
