"""Recovering jobs whose worker or broker message was lost. The SQL row is the record.

Two checks, run by the embedded runner's watchdog thread, by the web process's Celery
reconciler and by the ``medplib.reconcile`` Celery beat task:

* :func:`reap_stale_jobs`: a running job whose heartbeat is older than the job time
  limit has lost its worker (killed, host gone, or gave up on a locked database). It is
  queued again while attempts remain, else failed. A job still beating past its time
  limit is failed as timed out. So a dead worker's job is re-run within the time limit
  plus one reconcile interval, not after the broker's visibility timeout.
* :func:`lost_jobs`: a job that is queued (or running past its hard time limit) in the
  database but held nowhere in the broker — neither waiting in the queue nor reserved by
  a worker — is published again.

Publishing again is safe because a delivery of a finished job does nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from serving.db import transaction
from serving.models import Job, JobStatus, utcnow

log = logging.getLogger(__name__)


def task_ids_in_messages(raw_messages: Iterable[bytes | str]) -> set[str]:
    """Task ids in kombu Redis-transport payloads (queue entries or unacked entries)."""
    ids: set[str] = set()
    for raw in raw_messages:
        try:
            payload: Any = json.loads(raw)
        except (TypeError, ValueError):
            continue
        if isinstance(payload, list) and payload:  # unacked: [message, exchange, routing_key]
            payload = payload[0]
        if isinstance(payload, dict):
            task_id = (payload.get("headers") or {}).get("id")
            if isinstance(task_id, str):
                ids.add(task_id)
    return ids


def broker_task_ids(client: Any, *queues: str) -> set[str]:
    """Every task id waiting in ``queues`` (all priority lists) or reserved by a worker.

    The queues are read before the reserved set: a message moves from one to the other,
    never back, so reading in this order cannot miss it.
    """
    waiting: list[bytes] = []
    for queue in queues:
        for key in client.scan_iter(match=f"{queue}*"):
            if client.type(key) in (b"list", "list"):
                waiting.extend(client.lrange(key, 0, -1))
    reserved = client.hvals("unacked")
    return task_ids_in_messages(waiting) | task_ids_in_messages(reserved)


def stale_job_ids(
    db: Session, *, queued_before_s: float, running_longer_than_s: float
) -> list[str]:
    now = utcnow()
    rows = db.scalars(
        select(Job.id)
        .where(
            Job.runner == "celery",
            or_(
                (Job.status == JobStatus.queued)
                & (Job.queued_at < now - timedelta(seconds=queued_before_s)),
                (Job.status == JobStatus.running)
                & (Job.started_at < now - timedelta(seconds=running_longer_than_s)),
            ),
        )
        .order_by(Job.queued_at)
    )
    return list(rows)


def lost_jobs(
    factory: sessionmaker[Session],
    client: Any,
    *,
    queues: Sequence[str],
    queued_before_s: float,
    running_longer_than_s: float,
) -> list[str]:
    with transaction(factory) as db:
        candidates = stale_job_ids(
            db, queued_before_s=queued_before_s, running_longer_than_s=running_longer_than_s
        )
    if not candidates:
        return []
    held = broker_task_ids(client, *queues)
    missing = [j for j in candidates if j not in held]
    if not missing:
        return []
    with transaction(factory) as db:
        # Jobs may have finished while the broker was read.
        live = set(
            db.scalars(
                select(Job.id).where(
                    Job.id.in_(missing), Job.status.in_([JobStatus.queued, JobStatus.running])
                )
            )
        )
    return [j for j in missing if j in live]


def heartbeat_interval_s(time_limit_s: float) -> float:
    # Several beats fit in the time limit, so one skipped beat is not mistaken for death.
    return max(0.5, min(10.0, time_limit_s / 5))


def watchdog_interval_s(time_limit_s: float) -> float:
    # Silence is noticed after the time limit, and acted on within half of it more:
    # a dead worker's job runs again within 1.5 x the time limit when a worker is free.
    return max(0.5, min(30.0, time_limit_s / 2))


def poison_message(attempts: int) -> str:
    return (
        f"This question stopped the worker {attempts} times and will not be retried; "
        "try a different image or question."
    )


def timed_out_message(limit_s: float) -> str:
    return f"Timed out after {limit_s:g} s; try a shorter question."


def _aware(moment: datetime) -> datetime:
    # SQLite returns naive datetimes; every stored time is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def worker_gone(job: Job, *, now: datetime, time_limit_s: float) -> bool:
    """A running job whose worker stopped beating for longer than the job may run."""
    beat = job.heartbeat_at or job.started_at
    if job.status is not JobStatus.running or beat is None:
        return False
    return now - _aware(beat) > timedelta(seconds=time_limit_s)


def overran(job: Job, *, now: datetime, time_limit_s: float) -> bool:
    """A running job (still beating) past its time limit: nothing will stop it but us."""
    if job.status is not JobStatus.running or job.started_at is None:
        return False
    return now - _aware(job.started_at) > timedelta(seconds=time_limit_s)


@dataclass
class Reaped:
    requeued: list[str] = field(default_factory=list)  # publish these again
    failed: list[str] = field(default_factory=list)


def reap_stale_jobs(
    factory: sessionmaker[Session], *, runner: str, time_limit_s: float, max_attempts: int
) -> Reaped:
    """Re-queue or fail this runner's running jobs that no live worker is running."""
    now = utcnow()
    cutoff = now - timedelta(seconds=time_limit_s)
    reaped = Reaped()
    with transaction(factory) as db:
        # skip_locked: a job its worker is finishing right now is not stale.
        candidates = db.scalars(
            select(Job)
            .where(
                Job.runner == runner,
                Job.status == JobStatus.running,
                # The heartbeat is never older than the start, so this finds both kinds.
                Job.started_at < cutoff,
            )
            .with_for_update(skip_locked=True)
        )
        for job in candidates:
            if worker_gone(job, now=now, time_limit_s=time_limit_s):
                if job.attempts >= max_attempts:
                    _finish_failed(job, poison_message(job.attempts))
                    reaped.failed.append(job.id)
                else:
                    _requeue(job)
                    reaped.requeued.append(job.id)
            elif overran(job, now=now, time_limit_s=time_limit_s):
                _finish_failed(job, timed_out_message(time_limit_s))
                reaped.failed.append(job.id)
    for job_id in reaped.requeued:
        log.warning("job %s lost its worker (no heartbeat); queued again", job_id)
    for job_id in reaped.failed:
        log.warning("job %s was stale and has been failed", job_id)
    return reaped


def _finish_failed(job: Job, message: str) -> None:
    job.status = JobStatus.failed
    job.error = message
    job.finished_at = utcnow()


def _requeue(job: Job) -> None:
    # attempts is kept: the poison-pill guard counts this lost attempt.
    job.status = JobStatus.queued
    job.phase = None
    job.progress = 0.0
    job.worker_host = None
    job.heartbeat_at = None


def fail_if_stale(job: Job, *, time_limit_s: float) -> bool:
    """Fail a job no worker is really running (on a new question in its session)."""
    now = utcnow()
    if worker_gone(job, now=now, time_limit_s=time_limit_s):
        _finish_failed(job, "The worker answering this question stopped; ask it again.")
        return True
    if overran(job, now=now, time_limit_s=time_limit_s):
        _finish_failed(job, timed_out_message(time_limit_s))
        return True
    return False


def queued_not_in(
    factory: sessionmaker[Session], *, runner: str, held: set[str], older_than_s: float
) -> list[str]:
    """Queued jobs of this runner older than ``older_than_s`` that ``held`` does not hold."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    with transaction(factory) as db:
        rows = db.scalars(
            select(Job.id)
            .where(Job.runner == runner, Job.status == JobStatus.queued, Job.queued_at < cutoff)
            .order_by(Job.queued_at)
        )
        return [job_id for job_id in rows if job_id not in held]
