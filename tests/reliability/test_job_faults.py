"""Every job ends: a locked database, an unwritable artefact store, a worker that dies.

The first two run in-process on SQLite / both databases; the last against real Celery
worker processes, PostgreSQL and a private Redis.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from serving.db import make_engine
from serving.execution import run_job
from serving.invariants import check_invariants
from serving.models import Job, JobStatus
from serving.predictors import NoopPredictor
from serving.runners import EmbeddedRunner
from serving.services.turns import job_view
from tests.reliability.test_faults import Stack
from tests.serving.test_jobs import _setup


class WaitsForLock(NoopPredictor):
    """Answers once the test has locked the database, so the job must write under the lock."""

    def __init__(self):
        super().__init__()
        self.asked, self.locked = threading.Event(), threading.Event()

    def ask(self, question, regions=(), history=(), *, progress=None):
        self.asked.set()
        assert self.locked.wait(10)
        if progress is not None:
            progress("generating", 0.5)  # a progress write under the lock must not fail the job
        return super().ask(question, regions, history, progress=progress)


def _lock_while(db_path: Path, predictor: WaitsForLock, hold_s: float) -> threading.Thread:
    """Hold SQLite's exclusive lock from another connection for `hold_s`, once asked."""

    def hold():
        assert predictor.asked.wait(10)
        conn = sqlite3.connect(db_path, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        predictor.locked.set()
        time.sleep(hold_s)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def _short_busy_ctx(platform, url, **changes):
    # The incident's lock outlasted SQLite's 30 s busy timeout twice over; the same
    # proportions, scaled down: a 0.3 s busy timeout and a lock held for seconds.
    engine = make_engine(url, sqlite_busy_timeout_s=0.3)
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    return dataclasses.replace(platform.ctx, factory=factory, heartbeat_every_s=0.2, **changes)


def test_a_job_finishing_under_a_sqlite_lock_ends_once_the_lock_is_released(
    sqlite_url, make_platform, tmp_path
):
    predictor = WaitsForLock()
    platform = make_platform(sqlite_url, predictor=predictor)
    actor, session_id = _setup(platform)
    ctx = _short_busy_ctx(platform, sqlite_url, finish_retry_s=20)
    view = platform.ask(actor=actor, session_id=session_id, question="q", regions=[])

    locker = _lock_while(tmp_path / "medplib.db", predictor, hold_s=3.0)
    status = run_job(view.id, ctx=ctx)  # before: OperationalError escaped, job stuck running
    locker.join()
    assert status in (JobStatus.succeeded, JobStatus.failed)
    assert platform.call(job_view, job_id=view.id).status is status
    # The session takes the next question.
    platform.ask(actor=actor, session_id=session_id, question="next", regions=[])
    assert platform.call(lambda db: check_invariants(db, store=platform.store)) == []


def test_a_lock_outlasting_every_retry_is_ended_by_the_watchdog(
    sqlite_url, make_platform, tmp_path
):
    predictor = WaitsForLock()
    platform = make_platform(sqlite_url, predictor=predictor)
    actor, session_id = _setup(platform)
    limit_s = 1
    ctx = _short_busy_ctx(platform, sqlite_url, finish_retry_s=0.8, time_limit_s=limit_s)
    runner = EmbeddedRunner(ctx)
    runner.start()
    try:
        view = platform.ask(actor=actor, session_id=session_id, question="q", regions=[])
        locker = _lock_while(tmp_path / "medplib.db", predictor, hold_s=4.0)
        runner.submit(view.id)
        locker.join()
        released = time.monotonic()
        while not platform.call(job_view, job_id=view.id).status.final:
            assert time.monotonic() - released < 2 * limit_s + 1, "job still not ended"
            time.sleep(0.05)
        final = platform.call(job_view, job_id=view.id)
        assert final.status is JobStatus.succeeded and final.attempts == 2
    finally:
        runner.stop()


@pytest.mark.parametrize("error", [PermissionError, OSError])
def test_an_unwritable_store_fails_the_job_with_a_reason_and_frees_the_session(
    database_url, make_platform, monkeypatch, error
):
    platform = make_platform(database_url)
    actor, session_id = _setup(platform)
    box = {"kind": "box", "xyxy_px": [5, 5, 20, 15]}
    view = platform.ask(actor=actor, session_id=session_id, question="q", regions=[box])

    def refuse(*args, **kwargs):
        raise error(13, "Permission denied", "/srv/medplib/artefacts/masks/ab/.tmp-x")

    # Running as root, a read-only directory would still be written: refuse in the store.
    monkeypatch.setattr(platform.ctx.store, "put", refuse)
    assert run_job(view.id, ctx=platform.ctx) is JobStatus.failed
    failed = platform.call(job_view, job_id=view.id)
    assert failed.error.startswith("The answer could not be saved")
    assert "/srv" not in failed.error and "Traceback" not in failed.error
    assert platform.call(lambda db: db.get(Job, view.id).finished_at) is not None

    monkeypatch.undo()
    after = platform.ask(actor=actor, session_id=session_id, question="again", regions=[box])
    assert run_job(after.id, ctx=platform.ctx) is JobStatus.succeeded
    assert platform.call(lambda db: check_invariants(db, store=platform.store)) == []


def test_a_failure_record_that_cannot_be_written_raises_and_leaves_the_job_to_the_watchdog(
    sqlite_url, make_platform, monkeypatch
):
    platform = make_platform(sqlite_url)
    actor, session_id = _setup(platform)
    view = platform.ask(actor=actor, session_id=session_id, question="q", regions=[])
    ctx = dataclasses.replace(platform.ctx, finish_retry_s=0.3)
    calls = []

    def down(*args, **kwargs):
        calls.append(1)
        raise OperationalError("UPDATE jobs", {}, Exception("database is locked"))

    monkeypatch.setattr("serving.execution._store", down)
    monkeypatch.setattr("serving.execution._fail", down)
    with pytest.raises(OperationalError):
        run_job(view.id, ctx=ctx)
    assert len(calls) > 2  # both final writes were retried before giving up
    job = platform.call(lambda db: db.get(Job, view.id))
    assert job.status is JobStatus.running and job.heartbeat_at is not None


@pytest.mark.integration
def test_a_job_whose_worker_died_is_rerun_within_twice_its_time_limit(
    postgres_url, private_redis, tmp_path
):
    stack = Stack(postgres_url, private_redis.url, tmp_path)
    # Redis would give the message back only after this: the heartbeat must act first.
    stack.env["MEDPLIB_BROKER_VISIBILITY_TIMEOUT_S"] = "600"
    limit_s = int(stack.env["MEDPLIB_JOB_TIME_LIMIT_S"])
    try:
        first, second = stack.worker(), stack.worker()
        job_id = stack.ask("sleep 2", [{"kind": "box", "xyxy_px": [1, 1, 9, 9]}])
        stack.wait([job_id], until=lambda v: v.status is JobStatus.running)
        host = stack.platform.call(lambda db: db.get(Job, job_id).worker_host)
        child = int(host.rsplit(":", 1)[1])
        parent = next(p for p in (first, second) if _parent_of(child) == p.pid)
        os.killpg(parent.pid, signal.SIGKILL)  # the whole worker, not just its pool child
        died = time.monotonic()

        runner = stack.platform.runner
        runner.reconcile_every_s = 0.5
        runner.start()
        rerun = stack.wait(
            [job_id], timeout=4 * limit_s, until=lambda v: v.attempts == 2 or v.status.final
        )[job_id]
        elapsed = time.monotonic() - died
        print(f"re-claimed {elapsed:.1f} s after the worker died (limit {limit_s} s)")
        assert elapsed <= 2 * limit_s, "re-run later than 2 x the time limit"
        assert rerun.attempts == 2
        assert stack.wait([job_id])[job_id].status is JobStatus.succeeded
    finally:
        stack.close()


def _parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])
