"""Real PostgreSQL, real Redis, real `medplib worker` processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import func, select

from medplib.masks import decode_rle
from serving.models import Image, Job, JobStatus, Mask, Role, Turn
from serving.platform import build_platform
from serving.predictors import NoopPredictor, PredictorHolder
from serving.services.accounts import Actor, create_user
from serving.services.images import ingest_image
from serving.services.sessions import create_session, get_session
from serving.services.turns import cancel_job, job_view
from serving.settings import Settings
from tests.processes import start_worker, stop_worker
from tests.serving.conftest import migrate, png_bytes

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(postgres_url, redis_url, tmp_path) -> Iterator[Callable[..., object]]:
    migrate(postgres_url)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDPLIB_")},
        "MEDPLIB_DATABASE_URL": postgres_url,
        "MEDPLIB_BROKER_URL": redis_url,
        "MEDPLIB_PREDICTOR": "noop",
        "MEDPLIB_ARTEFACT_DIR": str(tmp_path / "artefacts"),
        "PYTHONUNBUFFERED": "1",
    }
    settings = Settings(
        database_url=postgres_url,
        broker_url=redis_url,
        predictor="noop",
        artefact_dir=tmp_path / "artefacts",
    )
    platform = build_platform(settings, holder=PredictorHolder(NoopPredictor))
    procs: list[subprocess.Popen] = []

    def workers(n: int = 1, **extra: str) -> list[subprocess.Popen]:
        for _ in range(n):
            procs.append(
                start_worker(
                    {**env, **extra}, tmp_path / f"worker{len(procs)}.log", "--loglevel", "WARNING"
                )
            )
        return procs

    platform.procs = procs  # type: ignore[attr-defined]
    yield platform, workers
    for proc in procs:
        stop_worker(proc)
    for log in sorted(tmp_path.glob("worker*.log")):
        sys.stdout.write(log.read_text(errors="replace")[-2000:])


def _session(platform) -> tuple[Actor, str]:
    def body(db):
        user = create_user(db, username="bob", password="12345678", role=Role.user)
        image = ingest_image(db, store=platform.store, settings=platform.settings, data=png_bytes())
        actor = Actor(user_id=user.id)
        return actor, create_session(db, actor=actor, image_id=image.id).id

    return platform.call(body)


def wait_final(platform, job_ids, timeout=90.0) -> dict[str, JobStatus]:
    deadline = time.monotonic() + timeout
    while True:
        dead = [p for p in getattr(platform, "procs", []) if p.poll() is not None]
        assert not dead, f"a worker exited with status {dead[0].returncode}"
        states = {j: platform.call(job_view, job_id=j).status for j in job_ids}
        if all(s.final for s in states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


def test_submit_run_store_through_celery_and_postgres(stack):
    platform, workers = stack
    workers(1)
    actor, session_id = _session(platform)
    region = [{"kind": "box", "xyxy_px": [2, 3, 12, 9]}]
    view = platform.ask(actor=actor, session_id=session_id, question="where?", regions=region)
    assert wait_final(platform, [view.id]) == {view.id: JobStatus.succeeded}
    session = platform.call(get_session, actor=actor, session_id=session_id)
    (turn,) = session.turns
    assert turn.answer == "noop answer to: where?"
    assert decode_rle(turn.masks[0].rle).sum() == 10 * 6
    job = platform.call(lambda db: db.get(Job, view.id))
    assert job.attempts == 1 and job.runner == "celery" and job.worker_host


def test_two_workers_drain_one_queue_without_running_a_job_twice(stack):
    platform, workers = stack
    actor, _ = _session(platform)
    # Each job sleeps a little so both workers get work.
    workers(2, MEDPLIB_NOOP_DELAY_S="0.2")

    def another_session(db):
        image = db.scalar(select(Image).limit(1))
        return create_session(db, actor=actor, image_id=image.id).id

    session_ids = [platform.call(another_session) for _ in range(12)]
    jobs = [
        platform.ask(actor=actor, session_id=s, question=f"q{i}", regions=[]).id
        for i, s in enumerate(session_ids)
    ]
    states = wait_final(platform, jobs)
    assert set(states.values()) == {JobStatus.succeeded}
    rows = platform.call(lambda db: db.execute(select(Job.attempts, Job.worker_host)).all())
    assert [a for a, _ in rows] == [1] * 12
    assert len({host for _, host in rows}) == 2  # both workers took jobs
    answered = platform.call(
        lambda db: db.scalar(select(func.count(Turn.id)).where(Turn.answer.is_not(None)))
    )
    assert answered == 12


def test_cancelled_job_is_skipped_by_the_worker(stack):
    platform, workers = stack
    actor, session_id = _session(platform)
    view = platform.ask(actor=actor, session_id=session_id, question="q", regions=[])
    platform.call(cancel_job, actor=actor, job_id=view.id)
    workers(1)
    second = platform.ask(actor=actor, session_id=session_id, question="next", regions=[])
    assert wait_final(platform, [second.id]) == {second.id: JobStatus.succeeded}
    assert platform.call(job_view, job_id=view.id).status is JobStatus.cancelled
    session = platform.call(get_session, actor=actor, session_id=session_id)
    assert [t.answer for t in session.turns] == [None, "noop answer to: next"]


def test_embedded_and_celery_runners_write_identical_rows(stack, sqlite_url, tmp_path):
    platform, workers = stack
    workers(1)
    region = [{"kind": "point", "xy_px": [20, 15]}, {"kind": "box", "xyxy_px": [0, 0, 8, 8]}]

    def run_on(p) -> tuple:
        actor, session_id = _session(p)
        view = p.ask(actor=actor, session_id=session_id, question="same", regions=region)
        assert wait_final(p, [view.id])[view.id] is JobStatus.succeeded
        turn = p.call(get_session, actor=actor, session_id=session_id).turns[0]
        masks = p.call(
            lambda db: list(
                db.scalars(select(Mask).where(Mask.turn_id == turn.id).order_by(Mask.index))
            )
        )
        return (
            turn.question,
            turn.regions,
            turn.answer,
            turn.checkpoint_id,
            [(m.index, m.rle, m.png_key, m.area_px, m.bbox_xyxy_px, m.score) for m in masks],
        )

    celery_rows = run_on(platform)
    migrate(sqlite_url)
    embedded = build_platform(
        Settings(database_url=sqlite_url, artefact_dir=tmp_path / "embedded"),
        holder=PredictorHolder(NoopPredictor),
    )
    embedded.runner.start()
    try:
        embedded_rows = run_on(embedded)
    finally:
        embedded.runner.stop()
    assert embedded_rows == celery_rows


def test_unreachable_broker_fails_the_job_with_a_reason(postgres_url, tmp_path):
    migrate(postgres_url)
    settings = Settings(
        database_url=postgres_url,
        broker_url="redis://127.0.0.1:1/0",  # nothing listens on port 1
        artefact_dir=tmp_path / "a",
    )
    platform = build_platform(settings, holder=PredictorHolder(NoopPredictor))
    actor, session_id = _session(platform)
    from serving.services.errors import Unavailable

    with pytest.raises(Unavailable, match="queue is unreachable"):
        platform.ask(actor=actor, session_id=session_id, question="q", regions=[])
    job = platform.call(lambda db: db.scalar(select(Job)))
    assert job.status is JobStatus.failed and "unreachable" in job.error


def test_a_workers_answer_streams_to_the_web_process_through_redis(stack):
    import asyncio

    from serving.job_events import changed_within

    platform, workers = stack
    workers(1, MEDPLIB_NOOP_DELAY_S="1.5")
    actor, session_id = _session(platform)
    platform.runner.start()  # the web process's relay subscribes to the workers' notices
    try:
        assert platform.runner.relay.connected.wait(10)

        async def follow(job_id: str) -> tuple[list[str], JobStatus]:
            seen: list[str] = []
            async with platform.events.subscribe(job_id) as changed:
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    await changed_within(changed, 0.5)
                    text = platform.events.text(job_id)
                    if text and (not seen or seen[-1] != text):
                        seen.append(text)
                    status = platform.call(job_view, job_id=job_id).status
                    if status.final:
                        return seen, status
            raise AssertionError("the job did not end")

        view = platform.ask(actor=actor, session_id=session_id, question="where?", regions=[])
        seen, status = asyncio.run(follow(view.id))
    finally:
        platform.runner.stop()
    assert status is JobStatus.succeeded
    assert len(seen) >= 2, seen  # partial text before the end, from another process
    assert all("noop answer to: where?".startswith(t) for t in seen)
