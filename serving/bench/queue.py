"""`medplib bench queue`: the platform's own overhead per job, model time excluded.

A job's overhead is its end-to-end latency (from the client's call until the job row is
final) minus the seconds the predictor spent. Runs the embedded runner on SQLite and,
when a broker is given, Celery + Redis + PostgreSQL with 1 and 2 worker processes,
all on loopback with the instant noop predictor.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import select

from serving.bench.databases import scratch_postgres
from serving.bench.stats import summary_ms
from serving.migrate import alembic_config
from serving.models import Job, Role
from serving.platform import Platform, build_platform
from serving.predictors import NoopPredictor, PredictorHolder
from serving.services.accounts import Actor, create_user
from serving.services.sessions import create_session
from serving.settings import Settings


def _seed(platform: Platform, sessions: int) -> tuple[Actor, list[str]]:
    import io

    import numpy as np
    from PIL import Image as PILImage

    from serving.services.images import ingest_image

    buf = io.BytesIO()
    PILImage.fromarray(np.zeros((64, 64, 3), np.uint8)).save(buf, "PNG")

    def body(db: Any) -> tuple[Actor, list[str]]:
        user = create_user(
            db, username=f"bench-{uuid.uuid4().hex[:8]}", password=None, role=Role.user
        )
        actor = Actor(user_id=user.id)
        image = ingest_image(
            db, store=platform.store, settings=platform.settings, data=buf.getvalue()
        )
        ids = [create_session(db, actor=actor, image_id=image.id).id for _ in range(sessions)]
        return actor, ids

    return platform.call(body)


def _final_rows(
    platform: Platform, job_ids: list[str], timeout_s: float, *, poll_s: float = 0.002
) -> dict[str, Job]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = platform.call(
            lambda db: {j.id: j for j in db.scalars(select(Job).where(Job.id.in_(job_ids)))}
        )
        if all(j.status.final for j in rows.values()) or time.monotonic() > deadline:
            return rows
        time.sleep(poll_s)


def _ts(moment: datetime) -> float:
    from datetime import timezone

    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def measure(platform: Platform, *, jobs: int, timeout_s: float = 120.0) -> dict[str, Any]:
    """Overhead one job at a time (no queueing), then throughput with all jobs at once."""
    actor, sessions = _seed(platform, jobs * 2)
    overheads = []
    lost = 0
    for i in range(jobs):
        start = time.time()
        view = platform.ask(actor=actor, session_id=sessions[i], question=f"q{i}", regions=[])
        row = _final_rows(platform, [view.id], timeout_s)[view.id]
        if row.finished_at is None:
            lost += 1
            continue
        overheads.append(_ts(row.finished_at) - start - (row.model_seconds or 0.0))
    start = time.time()
    ids = [
        platform.ask(actor=actor, session_id=sessions[jobs + i], question="t", regions=[]).id
        for i in range(jobs)
    ]
    rows = _final_rows(platform, ids, timeout_s)
    finished = [r.finished_at for r in rows.values() if r.finished_at is not None]
    elapsed = max(_ts(at) for at in finished) - start if finished else float("nan")
    lost += len(ids) - len(finished)
    return {
        "overhead": summary_ms(overheads),
        "throughput_jobs_per_s": round(len(finished) / elapsed, 1) if finished else 0.0,
        "completed": len(overheads) + len(finished),
        "lost": lost,
    }


@contextmanager
def running_stack(
    mode: str,
    *,
    postgres_admin_url: str,
    broker_url: str,
    workers: int = 1,
    noop_delay_s: float = 0.0,
) -> Iterator[Platform]:
    """A throw-away platform with the noop model: embedded on SQLite, or PostgreSQL +
    Redis + ``workers`` Celery worker processes. Everything is removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        with _stack_in(
            mode,
            Path(tmp),
            postgres_admin_url=postgres_admin_url,
            broker_url=broker_url,
            workers=workers,
            noop_delay_s=noop_delay_s,
        ) as platform:
            yield platform


@contextmanager
def _stack_in(
    mode: str,
    tmp: Path,
    *,
    postgres_admin_url: str,
    broker_url: str,
    workers: int = 1,
    noop_delay_s: float = 0.0,
) -> Iterator[Platform]:
    if mode == "embedded":
        url = f"sqlite:///{tmp}/bench.db"
        command.upgrade(alembic_config(url), "head")
        platform = build_platform(
            Settings(database_url=url, artefact_dir=tmp / "a"),
            holder=PredictorHolder(lambda: NoopPredictor(delay_s=noop_delay_s)),
        )
        platform.runner.start()
        try:
            yield platform
        finally:
            platform.runner.stop()
        return
    with scratch_postgres(postgres_admin_url) as url:
        with _workers(url, tmp, broker_url=broker_url, workers=workers, delay_s=noop_delay_s):
            settings = Settings(
                database_url=url, broker_url=broker_url, predictor="noop", artefact_dir=tmp / "a"
            )
            platform = build_platform(settings, holder=PredictorHolder(NoopPredictor))
            _warm_up(platform)
            yield platform


@contextmanager
def _workers(
    url: str, tmp: Path, *, broker_url: str, workers: int, delay_s: float
) -> Iterator[None]:
    """The database migrated, then ``workers`` Celery worker processes on it."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        command.upgrade(alembic_config(url), "head")
        env = {
            **os.environ,
            "MEDPLIB_DATABASE_URL": url,
            "MEDPLIB_BROKER_URL": broker_url,
            "MEDPLIB_PREDICTOR": "noop",
            "MEDPLIB_NOOP_DELAY_S": str(delay_s),
            "MEDPLIB_ARTEFACT_DIR": str(tmp / "a"),
        }
        for _ in range(workers):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "medplib.cli", "worker", "--loglevel", "WARNING"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        yield None
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)


def _warm_up(platform: Platform) -> None:
    """Wait until workers answer (their start is not platform overhead)."""
    actor, sessions = _seed(platform, 1)
    view = platform.ask(actor=actor, session_id=sessions[0], question="warm-up", regions=[])
    _final_rows(platform, [view.id], 120.0)


def run(args: Any) -> dict[str, Any]:
    runs = [("embedded", 1)] + ([("distributed", 1), ("distributed", 2)] if args.broker_url else [])
    results = []
    for mode, workers in runs:
        with running_stack(
            mode,
            postgres_admin_url=args.postgres_url,
            broker_url=args.broker_url,
            workers=workers,
        ) as platform:
            results.append({"mode": mode, "workers": workers, **measure(platform, jobs=args.jobs)})
    return {
        "benchmark": "queue",
        "jobs": args.jobs,
        "cpu_count": os.cpu_count(),
        "results": results,
    }
