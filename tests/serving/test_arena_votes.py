"""Acceptance: 200 blind votes between a strong and a weak stand-in model put the strong one
on top, with 95 % intervals that exclude a tie.

Everything runs as deployed in embedded mode: both checkpoints come from the predictor
plug-in, each side is a job on the in-process runner, and the scripted voter sees only what
a player sees (sides A and B, their masks), never the names.
"""

from __future__ import annotations

import random

import numpy as np

from medplib.masks import decode_rle
from serving.invariants import check_invariants
from serving.platform import build_platform
from serving.services.arena import MatchView, leaderboard, match_view, vote
from serving.settings import Settings
from tests.serving.arena_models import SIDE_PX, square_png
from tests.serving.conftest import migrate
from tests.serving.test_arena import _user

VOTES = 200
# The voter prefers the side whose mask is closer to the truth this often; otherwise it picks
# the worse side, calls a tie or calls both bad.
P_BETTER, P_WORSE, P_TIE = 0.7, 0.2, 0.05


def _dice(mask: np.ndarray, truth: np.ndarray) -> float:
    return 2 * float((mask & truth).sum()) / float(mask.sum() + truth.sum())


def _judge(match: MatchView, truth: np.ndarray, rng: random.Random) -> str:
    a, b = (_dice(decode_rle(side.masks[0].rle), truth) for side in match.sides)
    assert a != b  # one side is always the better one
    better, worse = ("a", "b") if a > b else ("b", "a")
    roll = rng.random()
    if roll < P_BETTER:
        return better
    if roll < P_BETTER + P_WORSE:
        return worse
    return "tie" if roll < P_BETTER + P_WORSE + P_TIE else "both_bad"


def test_two_hundred_votes_rank_the_better_model_first(sqlite_url, tmp_path):
    migrate(sqlite_url)
    settings = Settings(
        database_url=sqlite_url,
        artefact_dir=tmp_path / "artefacts",
        predictor="tests.serving.arena_models:stand_in",
        checkpoints="weak=weak,strong=strong",
    )
    platform = build_platform(settings)
    platform.runner.start()
    try:
        voter = _user(platform, "voter")
        places = [(4 + 3 * i, 30 - 2 * i) for i in range(10)]
        images = [
            platform.call(lambda db, x=x, y=y: _ingest(db, platform, square_png(x, y)))
            for x, y in places
        ]
        shown_as_a: list[str] = []
        order, choice_rng = random.Random(7), random.Random(11)
        for n in range(VOTES):
            x, y = places[n % len(places)]
            truth = np.zeros((48, 48), dtype=bool)
            truth[y : y + SIDE_PX, x : x + SIDE_PX] = True
            started = platform.start_match(
                actor=voter,
                image_id=images[n % len(images)],
                question="Please segment the bright square.",
                rng=order,
            )
            assert platform.runner.wait_idle(timeout=60)  # type: ignore[attr-defined]
            match = platform.call(match_view, actor=voter, match_id=started.match_id)
            assert match.finished and match.names is None
            voted = platform.call(
                vote, actor=voter, match_id=match.id, choice=_judge(match, truth, choice_rng)
            )
            shown_as_a.append((voted.names or ("",))[0])
        board = platform.call(leaderboard)
        problems = platform.call(lambda db: check_invariants(db, store=platform.store))
    finally:
        platform.runner.stop()

    assert problems == []
    # The side shown as A is drawn per match: both models were shown on both sides.
    assert 70 <= shown_as_a.count("strong") <= 130
    strong, weak = board.rows
    print(f"\nleaderboard after {board.votes} votes: {board.rows}\nwin matrix: {board.matrix}")
    assert board.votes == VOTES and (strong["model"], weak["model"]) == ("strong", "weak")
    assert strong["interval"][0] > 1000 > weak["interval"][1]  # each excludes a tie
    assert strong["interval"][0] > weak["interval"][1]  # and so does their difference
    assert strong["wins"] + weak["wins"] + strong["ties"] == VOTES
    assert board.matrix["strong"]["weak"] + board.matrix["weak"]["strong"] == VOTES


def _ingest(db, platform, data: bytes) -> str:
    from serving.services.images import ingest_image

    return ingest_image(db, store=platform.store, settings=platform.settings, data=data).id
