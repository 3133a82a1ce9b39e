"""The arena and the admins' checkpoint choices through the services, on both databases."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import func, select

from serving.execution import run_job
from serving.invariants import check_invariants
from serving.models import ArenaMatch, ArenaVote, Job, JobStatus, Role
from serving.platform import build_platform
from serving.services.accounts import Actor, create_user
from serving.services.arena import leaderboard, match_view, vote
from serving.services.checkpoints import checkpoint_choices, set_checkpoints
from serving.services.errors import Forbidden, InvalidInput, NotFound
from serving.services.images import ingest_image
from serving.services.reviews import review_case, review_queue
from serving.services.sessions import create_session, get_session, list_sessions
from serving.settings import Settings
from tests.serving.arena_models import square_png
from tests.serving.conftest import migrate

PLUG_IN = "tests.serving.arena_models:stand_in"


@pytest.fixture
def arena(database_url, tmp_path):
    """Three named stand-in checkpoints, loaded through the predictor plug-in; no runner
    thread (tests run the jobs themselves, so they can see a match before its answers)."""
    migrate(database_url)
    settings = Settings(
        database_url=database_url,
        artefact_dir=tmp_path / "artefacts",
        predictor=PLUG_IN,
        checkpoints="strong=strong,weak=weak,spare=strong",
    )
    platform = build_platform(settings)
    yield platform
    platform.runner.stop()


def _user(platform, name, role=Role.user) -> Actor:
    def body(db):
        made = create_user(db, username=name, password="password1", role=role)
        return Actor(user_id=made.id, role=role)

    return platform.call(body)


def _image(platform, x=10, y=20) -> str:
    return platform.call(
        lambda db: (
            ingest_image(
                db, store=platform.store, settings=platform.settings, data=square_png(x, y)
            ).id
        )
    )


def _count(platform, model) -> int:
    return platform.call(lambda db: db.scalar(select(func.count()).select_from(model)))


def _names(platform, match_id) -> tuple[str, str]:
    """The checkpoints shown as A and B, read from the record."""

    def body(db):
        match = db.get(ArenaMatch, match_id)
        return match.checkpoint_a, match.checkpoint_b

    return platform.call(body)


def _run(platform, started) -> None:
    for job_id in started.job_ids:
        run_job(job_id, ctx=platform.ctx)


def test_a_match_is_blind_until_its_one_vote(arena):
    ana, ben = _user(arena, "ana"), _user(arena, "ben")
    image_id = _image(arena)
    started = arena.start_match(
        actor=ana,
        image_id=image_id,
        question="Segment the square.",
        checkpoints=["strong", "weak"],
        rng=random.Random(1),
    )
    waiting = arena.call(match_view, actor=ana, match_id=started.match_id)
    assert [s.status for s in waiting.sides] == [JobStatus.queued] * 2
    assert waiting.names is None and not waiting.finished
    with pytest.raises(InvalidInput, match="Both answers must be in"):
        arena.call(vote, actor=ana, match_id=started.match_id, choice="a")
    _run(arena, started)
    shown = arena.call(match_view, actor=ana, match_id=started.match_id)
    assert shown.finished and shown.names is None and shown.answered_by is None
    assert [len(s.masks) for s in shown.sides] == [1, 1]
    # Someone the match was not shown to can neither see it nor vote on it, and is told
    # exactly what a made-up id gets (an id reveals nothing).
    for call, kwargs in ((match_view, {}), (vote, {"choice": "a"})):
        with pytest.raises(NotFound) as theirs:
            arena.call(call, actor=ben, match_id=started.match_id, **kwargs)
        with pytest.raises(NotFound) as nobodys:
            arena.call(call, actor=ben, match_id="e" * 32, **kwargs)
        assert str(theirs.value) == str(nobodys.value)
    with pytest.raises(InvalidInput, match="Vote a"):
        arena.call(vote, actor=ana, match_id=started.match_id, choice="A wins")
    with pytest.raises(NotFound):
        arena.call(vote, actor=ana, match_id="f" * 32, choice="a")
    assert _count(arena, ArenaVote) == 0
    voted = arena.call(vote, actor=ana, match_id=started.match_id, choice="tie")
    assert voted.vote is not None and voted.vote.value == "tie"
    assert sorted(voted.names or ()) == ["strong", "weak"]
    # Each side ran on the checkpoint it is revealed as: the stand-in says which it is.
    assert voted.answered_by == tuple(f"stand-in-{name}" for name in voted.names or ())
    with pytest.raises(InvalidInput, match="already voted on this match \\(a tie\\)"):
        arena.call(vote, actor=ana, match_id=started.match_id, choice="a")
    assert _count(arena, ArenaVote) == 1
    # The answers are the arena's: not among the player's sessions, not readable by them.
    assert arena.call(list_sessions, actor=ana) == []
    turn = arena.call(lambda db: db.get(ArenaMatch, started.match_id).turn_a.session_id)
    with pytest.raises(NotFound):
        arena.call(get_session, actor=ana, session_id=turn)
    # Nor do reviewers get them: the checkpoint badge would name a side before its vote.
    rita = _user(arena, "rita", Role.reviewer)
    assert arena.call(review_queue, actor=rita) == []
    side = arena.call(lambda db: db.get(ArenaMatch, started.match_id).turn_a_id)
    with pytest.raises(NotFound):
        arena.call(review_case, actor=rita, turn_id=side)
    assert arena.call(lambda db: check_invariants(db, store=arena.store)) == []


def test_bad_starts_are_refused_and_store_nothing(arena):
    ana = _user(arena, "ana")
    image_id = _image(arena)
    bad = [
        ({"checkpoints": ["strong", "nope"]}, "no checkpoint 'nope'; this deployment has strong"),
        ({"checkpoints": ["strong", "strong"]}, "two different checkpoints"),
        ({"checkpoints": ["strong"]}, "Name two checkpoints"),
        ({"question": "   "}, "Type a question"),
        ({"image_id": "0" * 32}, "image does not exist"),
        ({"regions": [{"kind": "circle"}]}, "unknown kind"),
    ]
    for change, message in bad:
        kwargs = {"actor": ana, "image_id": image_id, "question": "where?", **change}
        with pytest.raises((InvalidInput, NotFound), match=message):
            arena.start_match(**kwargs)
    assert [_count(arena, m) for m in (ArenaMatch, Job)] == [0, 0]


def test_admins_choose_the_default_and_the_arena(arena):
    ana, root = _user(arena, "ana"), _user(arena, "root", Role.admin)
    settings = arena.settings
    chosen = arena.call(checkpoint_choices, settings=settings)
    assert (chosen.available, chosen.default, chosen.arena) == (
        ["strong", "weak", "spare"],
        "strong",
        ["strong", "weak", "spare"],
    )
    with pytest.raises(Forbidden, match="admin role"):
        arena.call(set_checkpoints, actor=ana, settings=settings, default="weak")
    with pytest.raises(InvalidInput, match="no checkpoint 'gpt'"):
        arena.call(set_checkpoints, actor=root, settings=settings, default="weak", arena=["gpt"])
    with pytest.raises(InvalidInput, match="at least two"):
        arena.call(set_checkpoints, actor=root, settings=settings, arena=["weak", "weak"])
    assert arena.call(checkpoint_choices, settings=settings) == chosen  # nothing stored
    picked = arena.call(
        set_checkpoints, actor=root, settings=settings, default="weak", arena=["spare", "weak"]
    )
    assert (picked.default, picked.arena, picked.default_chosen) == (
        "weak",
        ["spare", "weak"],
        True,
    )
    # New questions go to the chosen default, recorded on their job.
    image_id = _image(arena, 5, 5)
    session_id = arena.call(lambda db: create_session(db, actor=ana, image_id=image_id).id)
    job = arena.ask(actor=ana, session_id=session_id, question="where?", regions=[])
    run_job(job.id, ctx=arena.ctx)
    stored = arena.call(
        lambda db: (db.get(Job, job.id).checkpoint, db.get(Job, job.id).turn.checkpoint_id)
    )
    assert stored == ("weak", "stand-in-weak")
    # Matches draw from the arena's checkpoints only; one outside it is refused by name.
    for seed in range(6):
        started = arena.start_match(
            actor=ana, image_id=_image(arena), question="q", rng=random.Random(seed)
        )
        assert set(_names(arena, started.match_id)) == {"spare", "weak"}
    with pytest.raises(InvalidInput, match="'strong' is not in the arena"):
        arena.start_match(actor=ana, image_id=_image(arena), question="q", checkpoints=["strong", "weak"])  # fmt: skip


def test_a_failed_side_cannot_be_judged_and_a_mixed_up_side_is_found(arena):
    ana = _user(arena, "ana")
    started = arena.start_match(
        actor=ana, image_id=_image(arena), question="q", checkpoints=["strong", "weak"]
    )
    run_job(started.job_ids[0], ctx=arena.ctx)

    def fail_b(db):
        job = db.get(Job, started.job_ids[1])
        job.status, job.error = JobStatus.failed, "The model could not answer."
        job.finished_at = job.queued_at

    arena.call(fail_b)
    with pytest.raises(InvalidInput, match="Side B did not answer \\(The model could not"):
        arena.call(vote, actor=ana, match_id=started.match_id, choice="a")
    assert arena.call(lambda db: check_invariants(db, store=arena.store)) == []

    def swap(db):
        match = db.get(ArenaMatch, started.match_id)
        match.checkpoint_a, match.checkpoint_b = match.checkpoint_b, match.checkpoint_a

    arena.call(swap)
    problems = arena.call(lambda db: check_invariants(db, store=arena.store))
    assert len(problems) == 2 and all("is shown as" in p for p in problems)


def test_a_single_checkpoint_deployment_has_no_arena(sqlite_url, make_platform):
    platform = make_platform(sqlite_url)
    ana = _user(platform, "ana")
    with pytest.raises(
        InvalidInput, match="needs two checkpoints; this deployment has only 'default'"
    ):
        platform.start_match(actor=ana, image_id=_image(platform), question="q")
    assert platform.call(leaderboard).rows == []


def test_leaderboard_counts_votes_as_shown(arena):
    ana = _user(arena, "ana")
    for seed in range(4):
        started = arena.start_match(
            actor=ana, image_id=_image(arena), question="q", checkpoints=["strong", "weak"],
            rng=random.Random(seed),
        )  # fmt: skip
        _run(arena, started)
        shown_as_a = _names(arena, started.match_id)[0]
        # Always for strong, whichever side it is shown on.
        arena.call(
            vote,
            actor=ana,
            match_id=started.match_id,
            choice="a" if shown_as_a == "strong" else "b",
        )
    board = arena.call(leaderboard, rounds=50)
    assert board.votes == 4 and [r["model"] for r in board.rows] == ["strong", "weak"]
    assert (board.rows[0]["wins"], board.rows[1]["losses"]) == (4, 4)
    assert board.matrix["strong"]["weak"] == 4 and board.matrix["weak"]["strong"] == 0
