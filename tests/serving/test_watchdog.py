"""Heartbeats and the watchdog: a job no worker is running is re-queued or failed."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from serving.execution import run_job
from serving.invariants import check_invariants
from serving.models import Job, JobStatus, LinkRole, Role, Turn, utcnow
from serving.predictors import NoopPredictor
from serving.reconcile import reap_stale_jobs
from serving.runners import EmbeddedRunner
from serving.services.accounts import Actor, create_user
from serving.services.errors import InvalidInput
from serving.services.shares import create_share_link, fork_session
from serving.services.turns import job_view, submit_turn
from tests.serving.test_jobs import _setup

LIMIT_S = 2


def _queued_job(platform, actor, session_id, question="q", **values):
    """A job stored as `platform.ask` stores it, never handed to a runner; then `values`."""

    def body(db):
        job = submit_turn(
            db,
            actor=actor,
            session_id=session_id,
            question=question,
            regions=[],
            settings=platform.settings,
            runner="embedded",
        )
        for key, value in values.items():
            setattr(job, key, value)
        return job.id

    return platform.call(body)


def _set(platform, job_id, **values):
    def body(db):
        job = db.get(Job, job_id)
        for key, value in values.items():
            setattr(job, key, value)

    platform.call(body)


def _ago(seconds):
    return utcnow() - timedelta(seconds=seconds)


def _job(platform, job_id):
    return platform.call(lambda db: db.get(Job, job_id))


def _reap(platform, max_attempts=3):
    return reap_stale_jobs(
        platform.factory, runner="embedded", time_limit_s=LIMIT_S, max_attempts=max_attempts
    )


def test_silent_job_is_requeued_then_failed_once_its_attempts_are_spent(
    database_url, make_platform
):
    platform = make_platform(database_url)
    actor, session_id = _setup(platform)
    job_id = _queued_job(platform, actor, session_id)
    # Claimed by a worker that then died: its last heartbeat is older than the limit.
    _set(platform, job_id, status=JobStatus.running, attempts=1, worker_host="gone:1",
         started_at=_ago(3 * LIMIT_S), heartbeat_at=_ago(LIMIT_S + 1))  # fmt: skip

    reaped = _reap(platform)
    assert (reaped.requeued, reaped.failed) == ([job_id], [])
    job = _job(platform, job_id)
    assert (job.status, job.attempts, job.worker_host) == (JobStatus.queued, 1, None)
    assert run_job(job_id, ctx=platform.ctx) is JobStatus.succeeded
    assert _job(platform, job_id).attempts == 2

    second = _queued_job(platform, actor, session_id, "again")
    _set(platform, second, status=JobStatus.running, attempts=3,
         started_at=_ago(3 * LIMIT_S), heartbeat_at=_ago(LIMIT_S + 1))  # fmt: skip
    reaped = _reap(platform, max_attempts=3)
    assert (reaped.requeued, reaped.failed) == ([], [second])
    failed = _job(platform, second)
    assert failed.status is JobStatus.failed and "stopped the worker 3 times" in failed.error
    assert failed.finished_at is not None


def test_beating_jobs_are_left_alone_until_they_overrun(sqlite_url, make_platform):
    platform = make_platform(sqlite_url)
    actor, session_id = _setup(platform)
    job_id = _queued_job(platform, actor, session_id)
    _set(platform, job_id, status=JobStatus.running, attempts=1,
         started_at=_ago(LIMIT_S - 1), heartbeat_at=utcnow())  # fmt: skip
    reaped = _reap(platform)
    assert reaped.requeued == reaped.failed == []
    assert _job(platform, job_id).status is JobStatus.running

    # Still beating, but past its time limit: nothing else would stop it.
    _set(platform, job_id, started_at=_ago(LIMIT_S + 1))
    assert _reap(platform).failed == [job_id]
    job = _job(platform, job_id)
    assert job.status is JobStatus.failed and "Timed out" in job.error


def test_a_session_is_not_blocked_by_a_job_whose_worker_died(sqlite_url, make_platform):
    platform = make_platform(sqlite_url, job_soft_time_limit_s=1, job_time_limit_s=LIMIT_S)
    actor, session_id = _setup(platform)
    first = platform.ask(actor=actor, session_id=session_id, question="one", regions=[])
    _set(platform, first.id, status=JobStatus.running, attempts=1, started_at=utcnow(),
         heartbeat_at=utcnow())  # fmt: skip
    with pytest.raises(InvalidInput, match="still being answered"):
        platform.ask(actor=actor, session_id=session_id, question="two", regions=[])

    _set(platform, first.id, heartbeat_at=_ago(LIMIT_S + 1), started_at=_ago(LIMIT_S + 1))
    second = platform.ask(actor=actor, session_id=session_id, question="two", regions=[])
    assert second.status is JobStatus.queued
    old = platform.call(job_view, job_id=first.id)
    assert old.status is JobStatus.failed and old.error.endswith("ask it again.")


class SlowPredictor(NoopPredictor):
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def ask(self, question, regions=(), history=(), *, progress=None):
        time.sleep(self.seconds)  # one long model step, no progress calls
        return super().ask(question, regions, history, progress=progress)


def test_heartbeat_is_written_during_a_long_model_call(sqlite_url, make_platform):
    platform = make_platform(sqlite_url, predictor=SlowPredictor(1.5))
    actor, session_id = _setup(platform)
    view = platform.ask(actor=actor, session_id=session_id, question="q", regions=[])
    beats = []

    def spy(job_id, claim, ctx):
        result = ctx_predict(job_id, claim, ctx)
        beats.append(_job(platform, job_id))
        return result

    ctx_predict = platform.ctx.predict
    ctx = dataclasses.replace(platform.ctx, heartbeat_every_s=0.2, predict=spy)
    assert run_job(view.id, ctx=ctx) is JobStatus.succeeded
    (during,) = beats
    assert during.heartbeat_at - during.started_at >= timedelta(seconds=1)


def test_embedded_watchdog_reruns_a_dead_workers_job_within_twice_the_limit(
    sqlite_url, make_platform
):
    platform = make_platform(sqlite_url)
    actor, session_id = _setup(platform)
    ctx = dataclasses.replace(platform.ctx, time_limit_s=LIMIT_S, heartbeat_every_s=0.2)
    runner = EmbeddedRunner(ctx)
    runner.start()
    try:
        # Another process claimed it and died right after its last heartbeat.
        job_id = _queued_job(platform, actor, session_id, status=JobStatus.running, attempts=1,
                             worker_host="gone:1", started_at=utcnow(), heartbeat_at=utcnow())  # fmt: skip
        died = time.monotonic()
        # A question stored but never handed to the runner (its submit raised).
        other_actor, other_session = platform.call(_second_user_session(platform, session_id))
        lost = _queued_job(platform, other_actor, other_session)
        stored = time.monotonic()
        while _job(platform, job_id).status is not JobStatus.succeeded:
            assert time.monotonic() - died < 2 * LIMIT_S, "not re-run within 2 x the limit"
            time.sleep(0.05)
        assert _job(platform, job_id).attempts == 2
        # The lost job is handed over by a later sweep (once older than a sweep interval), so
        # the runner may be idle in between: wait for the job itself, not for an idle runner.
        while _job(platform, lost).status is not JobStatus.succeeded:
            assert time.monotonic() - stored < 2 * LIMIT_S, "lost job not run within 2 x the limit"
            time.sleep(0.05)
        assert runner.wait_idle(timeout=2 * LIMIT_S)
    finally:
        runner.stop()


def _second_user_session(platform, session_id):
    def body(db):
        from serving.models import ChatSession
        from serving.services.sessions import create_session

        user = create_user(db, username="bob", password="correct horse", role=Role.user)
        actor = Actor(user_id=user.id)
        image_id = db.get(ChatSession, session_id).image_id
        return actor, create_session(db, actor=actor, image_id=image_id).id

    return body


def test_invariants_pass_on_a_fork_of_an_answered_session_that_is_asked_again(
    database_url, make_platform
):
    platform = make_platform(database_url)
    actor, session_id = _setup(platform)
    box = {"kind": "box", "xyxy_px": [5, 5, 20, 15]}
    first = platform.ask(actor=actor, session_id=session_id, question="one", regions=[box])
    assert run_job(first.id, ctx=platform.ctx) is JobStatus.succeeded

    def fork(db):
        _, token = create_share_link(db, actor=actor, session_id=session_id, role=LinkRole.fork)
        bob = create_user(db, username="bob", password="correct horse", role=Role.user)
        reader = Actor(user_id=bob.id)
        return reader, fork_session(db, actor=reader, token=token).id

    reader, fork_id = platform.call(fork)
    again = platform.ask(actor=reader, session_id=fork_id, question="two", regions=[box])
    assert run_job(again.id, ctx=platform.ctx) is JobStatus.succeeded

    def problems(db):
        return check_invariants(db, store=platform.store)

    assert platform.call(problems) == []

    # The checker still finds a real jobless turn: a copy claims to be one without an answer.
    def break_copy(db):
        db.scalars(select(Turn).where(Turn.session_id == fork_id, Turn.copied)).one().answer = None

    platform.call(break_copy)
    assert any("copied into a fork without its answer" in p for p in platform.call(problems))


def test_the_beat_task_requeues_and_republishes_a_dead_workers_job(
    sqlite_url, make_platform, redis_url, monkeypatch
):
    import redis
    from celery import current_app

    from serving.celery_app import INFERENCE_QUEUE, RECONCILE_TASK, create_celery
    from serving.reconcile import broker_task_ids
    from worker.tasks import reconcile

    platform = make_platform(sqlite_url, job_soft_time_limit_s=1, job_time_limit_s=LIMIT_S)
    actor, session_id = _setup(platform)
    job_id = _queued_job(platform, actor, session_id, status=JobStatus.running, attempts=1,
                         runner="celery", started_at=_ago(LIMIT_S + 1),
                         heartbeat_at=_ago(LIMIT_S + 1))  # fmt: skip
    for key, value in {
        "DATABASE_URL": sqlite_url,
        "BROKER_URL": redis_url,
        "JOB_SOFT_TIME_LIMIT_S": "1",
        "JOB_TIME_LIMIT_S": str(LIMIT_S),
    }.items():
        monkeypatch.setenv(f"MEDPLIB_{key}", value)
    app = create_celery(platform.settings.model_copy(update={"broker_url": redis_url}))
    entry = app.conf.beat_schedule["medplib-reconcile"]
    assert entry["task"] == RECONCILE_TASK and entry["schedule"] <= LIMIT_S / 2
    previous = current_app._get_current_object()
    app.set_current()  # the app a shared task runs under
    try:
        assert reconcile.apply().get() == 1
    finally:
        previous.set_current()
    assert _job(platform, job_id).status is JobStatus.queued
    with redis.Redis.from_url(redis_url) as client:
        assert job_id in broker_task_ids(client, INFERENCE_QUEUE)
