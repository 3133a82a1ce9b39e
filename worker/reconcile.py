"""Re-publishing jobs whose broker message was lost (for example when Redis restarted).

The SQL row is the record: a job that is queued (or running past its hard time limit)
in the database but held nowhere in the broker — neither waiting in the queue nor
reserved by a worker — is published again. Re-publishing is safe because a delivery of
a finished job does nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from worker.db import transaction
from worker.models import Job, JobStatus, utcnow

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


def broker_task_ids(client: Any, queue: str) -> set[str]:
    """Every task id waiting in ``queue`` (all priority lists) or reserved by a worker.

    The queue is read before the reserved set: a message moves from one to the other,
    never back, so reading in this order cannot miss it.
    """
    waiting: list[bytes] = []
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
    queue: str,
    queued_before_s: float,
    running_longer_than_s: float,
) -> list[str]:
    with transaction(factory) as db:
        candidates = stale_job_ids(
            db, queued_before_s=queued_before_s, running_longer_than_s=running_longer_than_s
        )
    if not candidates:
        return []
    held = broker_task_ids(client, queue)
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
