"""Leaderboard arithmetic for blind A/B votes, as pure functions on plain tuples.

A vote is ``(model_a, model_b, outcome)`` with outcome ``"a"``, ``"b"``, ``"tie"`` or
``"both_bad"``. For scoring, "both bad" is a tie: it says nothing about which is better.

Scores are Bradley–Terry strengths fitted by the minorise–maximise iteration (Hunter 2004),
ties counted as half a win each way, shown on the familiar Elo-like scale
(``1000 + 400 · log10(strength / geometric mean)``). Every pair of models also gets one
virtual tie (a weak prior): without it a model that never lost would have an infinite score.
Intervals come from resampling the votes with replacement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Vote = tuple[str, str, str]
OUTCOMES = ("a", "b", "tie", "both_bad")
SCALE = 400.0 / math.log(10.0)  # natural-log strengths to Elo points
PRIOR_TIES = 1.0  # virtual ties per pair of models


def _models(votes: Sequence[Vote], models: Sequence[str] | None) -> list[str]:
    names = list(models) if models is not None else sorted({m for a, b, _ in votes for m in (a, b)})
    for a, b, outcome in votes:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
        if a == b:
            raise ValueError(f"a model cannot face itself ({a})")
        if a not in names or b not in names:
            raise ValueError(f"vote for a model not on the board: {a} vs {b}")
    return names


def win_matrix(votes: Sequence[Vote], models: Sequence[str] | None = None) -> dict[str, dict]:
    """``matrix[x][y]``: how often x beat y (ties and "both bad" count half each way)."""
    names = _models(votes, models)
    wins = _wins(votes, names)
    return {x: {y: float(wins[i, j]) for j, y in enumerate(names)} for i, x in enumerate(names)}


def _wins(votes: Sequence[Vote], names: list[str]) -> np.ndarray:
    index = {m: i for i, m in enumerate(names)}
    wins = np.zeros((len(names), len(names)))  # (M, M): row beat column
    for a, b, outcome in votes:
        i, j = index[a], index[b]
        if outcome == "a":
            wins[i, j] += 1
        elif outcome == "b":
            wins[j, i] += 1
        else:
            wins[i, j] += 0.5
            wins[j, i] += 0.5
    return wins


def _fit(wins: np.ndarray, iterations: int = 500, tol: float = 1e-10) -> np.ndarray:
    """Bradley–Terry log-strengths from a win matrix, centred on 0."""
    m = wins.shape[0]
    wins = wins + (PRIOR_TIES / 2) * (1 - np.eye(m))  # the virtual ties
    games = wins + wins.T  # (M, M) comparisons per pair
    total_wins = wins.sum(axis=1)  # (M,)
    p = np.ones(m)
    for _ in range(iterations):
        denom = (games / (p[:, None] + p[None, :])).sum(axis=1)
        new = total_wins / denom
        new /= np.exp(np.log(new).mean())  # fix the scale: geometric mean 1
        if np.max(np.abs(new - p)) < tol:
            p = new
            break
        p = new
    return np.log(p)


def bradley_terry(votes: Sequence[Vote], models: Sequence[str] | None = None) -> dict[str, float]:
    """Each model's score on the Elo-like scale (mean 1000)."""
    names = _models(votes, models)
    if len(names) < 2:
        return dict.fromkeys(names, 1000.0)
    log_p = _fit(_wins(votes, names))
    return {m: 1000.0 + SCALE * float(x) for m, x in zip(names, log_p, strict=True)}


def bootstrap_intervals(
    votes: Sequence[Vote],
    models: Sequence[str] | None = None,
    *,
    rounds: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Each score's ``level`` interval over ``rounds`` resamplings of the votes."""
    names = _models(votes, models)
    if not votes or len(names) < 2:
        return dict.fromkeys(names, (1000.0, 1000.0))
    rng = np.random.default_rng(seed)
    samples = np.empty((rounds, len(names)))
    for r in range(rounds):
        drawn = rng.integers(0, len(votes), len(votes))
        samples[r] = 1000.0 + SCALE * _fit(_wins([votes[k] for k in drawn], names))
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail], axis=0)
    return {m: (float(lo[i]), float(hi[i])) for i, m in enumerate(names)}


def leaderboard(
    votes: Sequence[Vote], models: Sequence[str] | None = None, *, rounds: int = 1000, seed: int = 0
) -> list[dict]:
    """Rows best first: model, score, interval, votes taken part in, wins, losses, ties."""
    names = _models(votes, models)
    scores = bradley_terry(votes, names)
    intervals = bootstrap_intervals(votes, names, rounds=rounds, seed=seed)
    rows = []
    for m in names:
        mine = [(a, b, o) for a, b, o in votes if m in (a, b)]
        won = sum((o == "a" and a == m) or (o == "b" and b == m) for a, b, o in mine)
        tied = sum(o in ("tie", "both_bad") for _, _, o in mine)
        rows.append(
            {
                "model": m,
                "score": round(scores[m], 1),
                "interval": tuple(round(x, 1) for x in intervals[m]),
                "votes": len(mine),
                "wins": won,
                "losses": len(mine) - won - tied,
                "ties": tied,
            }
        )
    return sorted(rows, key=lambda row: -row["score"])
