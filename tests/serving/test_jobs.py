"""The job lifecycle through services and the embedded runner, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from medplib.masks import decode_rle
from serving.execution import run_job
from serving.models import Job, JobStatus, Mask, Role, Turn
from serving.services.accounts import Actor, anonymous_actor, create_user
from serving.services.errors import Forbidden, InvalidInput, NotFound, RateLimited
from serving.services.images import ingest_image
from serving.services.sessions import create_session, get_session, list_sessions
from serving.services.turns import cancel_job, job_view
from tests.serving.conftest import png_bytes


def _setup(platform, *, width=40, height=30):
    def body(db):
        user = create_user(db, username="alice", password="correct horse", role=Role.user)
        image = ingest_image(
            db, store=platform.store, settings=platform.settings, data=png_bytes(width, height)
        )
        actor = Actor(user_id=user.id)
        session = create_session(db, actor=actor, image_id=image.id, title="case 1")
        return actor, session.id

    return platform.call(body)


def test_submit_run_store_on_both_databases(database_url, make_platform):
    platform = make_platform(database_url)
    actor, session_id = _setup(platform)
    box = {"kind": "box", "xyxy_px": [5, 5, 20, 15]}
    view = platform.ask(actor=actor, session_id=session_id, question="what is here?", regions=[box])
    assert view.status is JobStatus.queued and view.position == 1

    status = run_job(view.id, ctx=platform.ctx)
    assert status is JobStatus.succeeded

    session = platform.call(get_session, actor=actor, session_id=session_id)
    (turn,) = session.turns
    assert turn.answer == "noop answer to: what is here?"
    assert turn.checkpoint_id == "noop"
    (mask,) = turn.masks
    pixels = decode_rle(mask.rle)
    assert pixels.shape == (30, 40)
    # The echo predictor returns the region: a box over pixel centres 5.5..19.5 x 5.5..14.5.
    assert mask.area_px == int(pixels.sum()) == 15 * 10
    assert mask.bbox_xyxy_px == [5, 5, 20, 15]
    assert platform.store.exists(mask.png_key)
    done = platform.call(job_view, job_id=view.id)
    assert (done.status, done.progress, done.attempts) == (JobStatus.succeeded, 1.0, 1)


def test_rerun_of_finished_job_writes_nothing_twice(sqlite_url, make_platform):
    platform = make_platform(sqlite_url)
    actor, session_id = _setup(platform)
    regions = [{"kind": "point", "xy_px": [10, 10]}]
    view = platform.ask(actor=actor, session_id=session_id, question="q", regions=regions)
    assert run_job(view.id, ctx=platform.ctx) is JobStatus.succeeded
    assert run_job(view.id, ctx=platform.ctx) is JobStatus.succeeded

    def counts(db):
        return (
            db.scalar(select(func.count(Turn.id))),
            db.scalar(select(func.count(Mask.id))),
            db.scalar(select(Job.attempts)),
        )

    assert platform.call(counts) == (1, 1, 1)


def test_running_job_redelivered_after_worker_death_then_poison_guard(sqlite_url, make_platform):
    platform = make_platform(sqlite_url, job_max_attempts=2)
    actor, session_id = _setup(platform)
    view = platform.ask(actor=actor, session_id=session_id, question="q", regions=[])

    def die(db):  # a worker claimed the job and then vanished
        job = db.get(Job, view.id)
        job.status, job.attempts = JobStatus.running, 1

    platform.call(die)
    # Re-delivery runs it (second attempt) and it succeeds.
    assert run_job(view.id, ctx=platform.ctx) is JobStatus.succeeded

    view2 = platform.ask(actor=actor, session_id=session_id, question="again", regions=[])

    def die_twice(db):
        job = db.get(Job, view2.id)
        job.status, job.attempts = JobStatus.running, 2

    platform.call(die_twice)
    assert run_job(view2.id, ctx=platform.ctx) is JobStatus.failed
    failed = platform.call(job_view, job_id=view2.id)
    assert "stopped the worker 2 times" in failed.error


def test_predictor_errors_become_user_messages(sqlite_url, make_platform):
    class Broken:
        checkpoint_id = "broken"

        def set_image(self, image):
            pass

        def ask(self, *args, **kwargs):
            raise RuntimeError("CUDA out of memory at 0x7f")

    platform = make_platform(sqlite_url, predictor=Broken())
    actor, session_id = _setup(platform)
    view = platform.ask(actor=actor, session_id=session_id, question="q", regions=[])
    assert run_job(view.id, ctx=platform.ctx) is JobStatus.failed
    error = platform.call(job_view, job_id=view.id).error
    assert "RuntimeError" in error and "0x7f" not in error

    session = platform.call(get_session, actor=actor, session_id=session_id)
    assert session.turns[0].answer is None and session.turns[0].masks == []


def test_embedded_runner_drains_queue_and_recovers_on_restart(sqlite_url, make_platform):
    platform = make_platform(sqlite_url)
    actor, session_id = _setup(platform)
    first = platform.ask(actor=actor, session_id=session_id, question="before start", regions=[])
    # The runner was not started: the job waits. A (re)started runner picks it up from SQL.
    platform.runner.start()
    assert platform.runner.wait_idle(timeout=30)
    assert platform.call(job_view, job_id=first.id).status is JobStatus.succeeded
    second = platform.ask(actor=actor, session_id=session_id, question="after", regions=[])
    assert platform.runner.wait_idle(timeout=30)
    assert platform.call(job_view, job_id=second.id).status is JobStatus.succeeded
    assert [s.turns for s in platform.call(list_sessions, actor=actor)] == [2]


def test_cancel_queued_job_is_never_run(sqlite_url, make_platform):
    platform = make_platform(sqlite_url)
    actor, session_id = _setup(platform)
    view = platform.ask(actor=actor, session_id=session_id, question="q", regions=[])
    cancelled = platform.call(cancel_job, actor=actor, job_id=view.id)
    assert cancelled.status is JobStatus.cancelled
    assert run_job(view.id, ctx=platform.ctx) is JobStatus.cancelled
    session = platform.call(get_session, actor=actor, session_id=session_id)
    assert session.turns[0].answer is None


@pytest.mark.parametrize(
    ("question", "regions", "message"),
    [
        ("", [], "Type a question"),
        ("x" * 2001, [], "limit is 2,000"),
        ("q", [{"kind": "box", "xyxy_px": [0, 0, float("nan"), 3]}], "NaN"),
        ("q", [{"kind": "point", "xy_px": [500, 5]}], "outside"),
        ("q", {"kind": "point"}, "list"),
        ("q", [{"kind": "box", "xyxy_px": [1, 1, 2, 2]}] * 17, "At most 16 regions"),
    ],
)
def test_bad_questions_and_regions_store_nothing(
    sqlite_url, make_platform, question, regions, message
):
    platform = make_platform(sqlite_url)
    actor, session_id = _setup(platform)
    with pytest.raises(InvalidInput) as err:
        platform.ask(actor=actor, session_id=session_id, question=question, regions=regions)
    assert message.lower() in str(err.value).lower()
    assert platform.call(lambda db: db.scalar(select(func.count(Turn.id)))) == 0
    assert platform.call(lambda db: db.scalar(select(func.count(Job.id)))) == 0


def test_other_users_cannot_read_or_write_a_private_session(sqlite_url, make_platform):
    platform = make_platform(sqlite_url)
    actor, session_id = _setup(platform)
    mallory = platform.call(
        lambda db: Actor(
            user_id=create_user(db, username="mallory", password="12345678", role=Role.user).id
        )
    )
    with pytest.raises(NotFound):
        platform.call(get_session, actor=mallory, session_id=session_id)
    with pytest.raises(NotFound):
        platform.ask(actor=mallory, session_id=session_id, question="q", regions=[])
    admin = Actor(user_id=mallory.user_id, role=Role.admin)
    assert platform.call(get_session, actor=admin, session_id=session_id).id == session_id
    with pytest.raises(Forbidden):
        platform.ask(actor=admin, session_id=session_id, question="q", regions=[])


def test_anonymous_rate_limit(sqlite_url, make_platform):
    platform = make_platform(sqlite_url, anon_jobs_per_minute=2)
    _, _ = _setup(platform)

    def anon_session(db):
        actor = anonymous_actor(db, browser_secret="a" * 24)
        image = ingest_image(db, store=platform.store, settings=platform.settings, data=png_bytes())
        return actor, create_session(db, actor=actor, image_id=image.id).id

    actor, session_id = platform.call(anon_session)
    for i in range(2):
        view = platform.ask(actor=actor, session_id=session_id, question=f"q{i}", regions=[])
        run_job(view.id, ctx=platform.ctx)
    with pytest.raises(RateLimited):
        platform.ask(actor=actor, session_id=session_id, question="q3", regions=[])


def test_same_image_bytes_are_stored_once(sqlite_url, make_platform):
    platform = make_platform(sqlite_url)
    data = png_bytes(seed=3)

    def twice(db):
        a = ingest_image(db, store=platform.store, settings=platform.settings, data=data)
        b = ingest_image(db, store=platform.store, settings=platform.settings, data=data)
        return a.id, b.id, a.width_px, a.height_px, a.original_key, a.display_key

    a, b, w, h, original, display = platform.call(twice)
    assert a == b and (w, h) == (40, 30)
    files = {
        p.relative_to(platform.store.root).as_posix()
        for p in platform.store.root.rglob("*")
        if p.is_file()
    }
    # An RGB PNG re-encodes to the same bytes, so original and display share one object.
    assert files == {original, display} and len(files) == 1


def test_history_is_passed_to_the_model(sqlite_url, make_platform):
    seen = []

    class Recorder:
        checkpoint_id = "recorder"

        def set_image(self, image):
            seen.append(("image", image.shape))

        def ask(self, question, regions=(), history=(), *, progress=None):
            seen.append(("ask", question, list(history)))
            from serving.predictors import NoopPrediction

            return NoopPrediction(answer=f"A:{question}", raw_answer=f"A:{question}")

    platform = make_platform(sqlite_url, predictor=Recorder())
    actor, session_id = _setup(platform)
    for q in ("one", "two"):
        view = platform.ask(actor=actor, session_id=session_id, question=q, regions=[])
        run_job(view.id, ctx=platform.ctx)
    # The image is encoded once for both questions; the second sees the first as history.
    assert seen == [
        ("image", (30, 40, 3)),
        ("ask", "one", []),
        ("ask", "two", [("one", "A:one")]),
    ]
