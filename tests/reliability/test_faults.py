"""Faults against the real stack: PostgreSQL, Redis and Celery worker processes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from serving.models import Job, JobStatus, Mask, Role, Turn
from serving.platform import build_platform
from serving.predictors import NoopPredictor, PredictorHolder
from serving.services.accounts import Actor, create_user
from serving.services.errors import Unavailable
from serving.services.images import ingest_image
from serving.services.sessions import create_session
from serving.services.turns import job_view
from serving.settings import Settings
from tests.processes import start_worker, stop_worker
from tests.serving.conftest import migrate, png_bytes

pytestmark = pytest.mark.integration

LIMITS = {
    "MEDPLIB_JOB_SOFT_TIME_LIMIT_S": "3",
    "MEDPLIB_JOB_TIME_LIMIT_S": "5",
    "MEDPLIB_BROKER_VISIBILITY_TIMEOUT_S": "10",
    "MEDPLIB_JOB_MAX_ATTEMPTS": "2",
}


class Stack:
    def __init__(self, postgres_url: str, broker_url: str, tmp: Path) -> None:
        migrate(postgres_url)
        self.tmp = tmp
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MEDPLIB_")},
            **LIMITS,
            "MEDPLIB_DATABASE_URL": postgres_url,
            "MEDPLIB_BROKER_URL": broker_url,
            "MEDPLIB_PREDICTOR": "tests.reliability.chaos:make",
            "MEDPLIB_ARTEFACT_DIR": str(tmp / "artefacts"),
        }
        settings = Settings(
            database_url=postgres_url,
            broker_url=broker_url,
            artefact_dir=tmp / "artefacts",
            job_soft_time_limit_s=3,
            job_time_limit_s=5,
            broker_visibility_timeout_s=10,
            job_max_attempts=2,
        )
        self.platform = build_platform(settings, holder=PredictorHolder(NoopPredictor))
        self.procs = []
        self.actor, self.image_id = self.platform.call(self._seed)

    def _seed(self, db):
        user = create_user(db, username="u", password="password1", role=Role.user)
        image = ingest_image(
            db, store=self.platform.store, settings=self.platform.settings, data=png_bytes()
        )
        return Actor(user_id=user.id), image.id

    def worker(self):
        proc = start_worker(self.env, self.tmp / f"worker{len(self.procs)}.log")
        self.procs.append(proc)
        return proc

    def ask(self, question: str, regions=None):
        session_id = self.platform.call(
            lambda db: create_session(db, actor=self.actor, image_id=self.image_id).id
        )
        return self.platform.ask(
            actor=self.actor, session_id=session_id, question=question, regions=regions or []
        ).id

    def status(self, job_id):
        return self.platform.call(job_view, job_id=job_id)

    def wait(self, job_ids, *, timeout=90.0, until=lambda v: v.status.final):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            views = {j: self.status(j) for j in job_ids}
            if all(until(v) for v in views.values()):
                return views
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting: { {j: v.status for j, v in views.items()} }")

    def close(self):
        for proc in self.procs:
            stop_worker(proc)
        self.platform.runner.stop()

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:] for p in sorted(self.tmp.glob("worker*.log"))
        )


@pytest.fixture
def stack(postgres_url, private_redis, tmp_path):
    s = Stack(postgres_url, private_redis.url, tmp_path)
    yield s
    s.close()
    print(s.logs())


def test_sigkilled_worker_mid_job_finishes_exactly_once(stack):
    stack.worker()
    box = [{"kind": "box", "xyxy_px": [1, 1, 9, 9]}]
    job_id = stack.ask("sleep 2.5", box)
    running = stack.wait([job_id], until=lambda v: v.status is JobStatus.running)[job_id]
    assert running.attempts == 1
    host = stack.platform.call(lambda db: db.get(Job, job_id).worker_host)
    os.kill(int(host.rsplit(":", 1)[1]), signal.SIGKILL)  # the pool process running the job

    final = stack.wait([job_id])[job_id]
    assert final.status is JobStatus.succeeded and final.attempts == 2
    counts = stack.platform.call(
        lambda db: (
            db.scalar(select(func.count(Turn.id)).where(Turn.answer.is_not(None))),
            db.scalar(select(func.count(Mask.id))),
        )
    )
    assert counts == (1, 1)


def test_poison_job_fails_after_its_attempts_while_others_flow(stack):
    stack.worker()
    poison = stack.ask("poison")
    others = [stack.ask(f"fine {i}") for i in range(3)]
    views = stack.wait([poison, *others], timeout=120)
    assert views[poison].status is JobStatus.failed
    assert "stopped the worker 2 times" in views[poison].error
    assert [views[j].status for j in others] == [JobStatus.succeeded] * 3


def test_job_over_its_time_limit_fails_with_timed_out_and_worker_recovers(stack):
    stack.worker()
    slow = stack.ask("sleep 20")
    after = stack.ask("quick")
    views = stack.wait([slow, after], timeout=90)
    assert views[slow].status is JobStatus.failed
    assert "timed out" in views[slow].error.lower()
    assert views[after].status is JobStatus.succeeded


def test_redis_restart_loses_nothing(stack, private_redis):
    queued = [stack.ask(f"before restart {i}") for i in range(3)]  # no worker yet: they wait
    private_redis.stop()
    with pytest.raises(Unavailable, match="queue is unreachable"):
        stack.ask("during outage")
    private_redis.start()  # empty: the three messages are gone
    stack.worker()
    runner = stack.platform.runner
    runner.queued_grace_s = 0.0
    republished = runner.reconcile()
    assert sorted(republished) == sorted(queued)
    views = stack.wait(queued)
    assert {v.status for v in views.values()} == {JobStatus.succeeded}
    every = stack.platform.call(lambda db: list(db.scalars(select(Job))))
    for job in every:
        assert job.status.final
        assert job.status is JobStatus.succeeded or job.error  # failures carry a reason
    assert runner.reconcile() == []  # nothing left to recover


def test_postgres_outage_gives_clear_errors_and_recovers(pg_proxy, tmp_path):
    proxy, url = pg_proxy
    platform = build_platform(
        Settings(database_url=url, artefact_dir=tmp_path / "a"),
        holder=PredictorHolder(NoopPredictor),
    )
    platform.runner.start()
    try:

        def seed(db):
            actor = Actor(
                user_id=create_user(db, username="p", password="password1", role=Role.user).id
            )
            image = ingest_image(
                db, store=platform.store, settings=platform.settings, data=png_bytes()
            )
            return actor, create_session(db, actor=actor, image_id=image.id).id

        actor, session_id = platform.call(seed)
        first = platform.ask(actor=actor, session_id=session_id, question="one", regions=[])
        assert platform.runner.wait_idle(timeout=30)
        proxy.cut()
        for _ in range(3):
            with pytest.raises(Unavailable, match="database is unreachable"):
                platform.ask(actor=actor, session_id=session_id, question="lost?", regions=[])
        time.sleep(2)
        proxy.restore()
        second = platform.ask(actor=actor, session_id=session_id, question="two", regions=[])
        assert platform.runner.wait_idle(timeout=30)
        views = [platform.call(job_view, job_id=j.id) for j in (first, second)]
        assert [v.status for v in views] == [JobStatus.succeeded, JobStatus.succeeded]
        questions = platform.call(
            lambda db: [t.question for t in db.scalars(select(Turn).order_by(Turn.index))]
        )
        assert questions == ["one", "two"]  # no half-written turn from the outage
    finally:
        platform.runner.stop()
