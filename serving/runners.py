"""Job runners: where a queued job id goes. The job code is the same for both."""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from serving.db import transaction
from serving.execution import JobContext, run_job
from serving.job_events import RedisRelay
from serving.models import Job, JobStatus, utcnow
from serving.reconcile import queued_not_in, reap_stale_jobs, watchdog_interval_s
from serving.services.errors import Unavailable
from serving.services.turns import live_job_ids
from serving.settings import DEFAULT_CHECKPOINT, checkpoint_queue

log = logging.getLogger(__name__)


class Runner(Protocol):
    name: str

    def submit(self, job_id: str) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class EmbeddedRunner:
    """An in-process worker thread and queue: embedded mode needs no broker.

    On start it picks up every job the database says is still live, so jobs queued
    or running when the process last stopped are not lost. While started, a watchdog
    thread ends or re-queues jobs nothing is running (see :meth:`reconcile`).
    """

    name = "embedded"

    def __init__(self, ctx: JobContext, *, reconcile_every_s: float | None = None) -> None:
        self.ctx = ctx
        self.reconcile_every_s = reconcile_every_s or watchdog_interval_s(ctx.time_limit_s)
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._stop = threading.Event()
        self._pending = 0
        self._held: Counter[str] = Counter()  # ids submitted and not yet run to the end
        self._cond = threading.Condition()

    def start(self) -> None:
        if self._thread is not None:
            return
        with transaction(self.ctx.factory) as db:
            for job_id in live_job_ids(db):
                self.submit(job_id)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="medplib-jobs", daemon=True)
        self._thread.start()
        self._watchdog = threading.Thread(target=self._watch, name="medplib-watchdog", daemon=True)
        self._watchdog.start()

    def submit(self, job_id: str) -> None:
        with self._cond:
            self._pending += 1
            self._held[job_id] += 1
        self._queue.put(job_id)

    def stop(self) -> None:
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=30)
            self._watchdog = None
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def reconcile(self) -> list[str]:
        """Re-queue or fail jobs no worker runs, and run again those this queue lost."""
        reaped = reap_stale_jobs(
            self.ctx.factory,
            runner=self.name,
            time_limit_s=self.ctx.time_limit_s,
            max_attempts=self.ctx.max_attempts,
        )
        for job_id in reaped.requeued:
            self.submit(job_id)
        with self._cond:
            held = set(self._held)
        # Queued in the database but in no queue: its run raised before the claim.
        lost = queued_not_in(
            self.ctx.factory, runner=self.name, held=held, older_than_s=self.reconcile_every_s
        )
        for job_id in lost:
            log.warning("job %s was queued but not held by the runner; submitting it", job_id)
            self.submit(job_id)
        return [*reaped.requeued, *lost]

    def _watch(self) -> None:
        while not self._stop.wait(self.reconcile_every_s):
            try:
                self.reconcile()
            except Exception as exc:  # the database is down: try again later
                log.warning("watchdog skipped: %s", exc)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted job has been run (tests and benchmarks)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def _loop(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            try:
                run_job(job_id, ctx=self.ctx)
            except Exception:  # a database outage must not kill the only worker thread
                log.exception("embedded runner: job %s could not be run", job_id)
            finally:
                with self._cond:
                    self._pending -= 1
                    self._held[job_id] -= 1
                    if self._held[job_id] <= 0:
                        del self._held[job_id]
                    self._cond.notify_all()


class CeleryRunner:
    """Publishes each job id to its checkpoint's queue (``gpu.medplib`` for the default
    checkpoint, ``gpu.<name>`` for the others); that checkpoint's workers run it.

    While started, a reconciler thread re-queues jobs whose worker died and re-publishes
    jobs whose message the broker lost; the ``medplib.reconcile`` beat task does the same.
    """

    name = "celery"

    def __init__(
        self,
        app: object,
        factory: sessionmaker[Session],
        *,
        reconcile_every_s: float = 30.0,
        queued_grace_s: float = 30.0,
        running_grace_s: float = 600.0,
        time_limit_s: float = 300.0,
        max_attempts: int = 3,
        relay: RedisRelay | None = None,
        queues: Mapping[str, str] | None = None,
        default_checkpoint: str = DEFAULT_CHECKPOINT,
    ) -> None:
        self.app = app
        # Checkpoint name -> queue (`Settings.checkpoint_queues`); a job with none recorded
        # goes to the default checkpoint's.
        self.queues = dict(queues or {DEFAULT_CHECKPOINT: checkpoint_queue(DEFAULT_CHECKPOINT)})
        self.default_checkpoint = default_checkpoint
        # The web process's copy of the workers' job notices (None in the beat task).
        self.relay = relay
        self.factory = factory
        self.reconcile_every_s = reconcile_every_s
        self.queued_grace_s = queued_grace_s
        self.running_grace_s = running_grace_s
        self.time_limit_s = time_limit_s
        self.max_attempts = max_attempts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._reconcile_loop, name="medplib-reconcile", daemon=True
            )
            self._thread.start()
        if self.relay is not None:
            self.relay.start()

    def stop(self) -> None:
        self._stop.set()
        if self.relay is not None:
            self.relay.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def reconcile(self) -> list[str]:
        """Publish again every job whose worker died or whose message the broker lost.

        Returns their ids. A dead worker's message may still sit in the broker's unacked
        set until the visibility timeout; its late delivery finds the job final and does
        nothing.
        """
        import redis

        from serving.reconcile import lost_jobs

        reaped = reap_stale_jobs(
            self.factory,
            runner=self.name,
            time_limit_s=self.time_limit_s,
            max_attempts=self.max_attempts,
        )
        for job_id in reaped.requeued:
            try:
                self.submit(job_id)
            except Unavailable:  # submit failed the job with a reason; the broker is down
                return reaped.requeued

        url = self.app.conf.broker_url  # type: ignore[attr-defined]
        with redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5) as client:
            missing = lost_jobs(
                self.factory,
                client,
                queues=sorted(set(self.queues.values())),
                queued_before_s=self.queued_grace_s,
                running_longer_than_s=self.running_grace_s,
            )
        for job_id in missing:
            log.warning("job %s was not in the broker; publishing it again", job_id)
            try:
                self.submit(job_id)
            except Unavailable:
                break
        return [*reaped.requeued, *missing]

    def _reconcile_loop(self) -> None:
        while not self._stop.wait(self.reconcile_every_s):
            try:
                self.reconcile()
            except Exception as exc:  # the broker or database is down: try again later
                log.warning("reconcile skipped: %s", exc)

    def queue_of(self, job_id: str) -> str | None:
        """The queue of the job's checkpoint; None when this deployment no longer has it."""
        with transaction(self.factory) as db:
            name = db.scalar(select(Job.checkpoint).where(Job.id == job_id))
        return self.queues.get(name or self.default_checkpoint)

    def submit(self, job_id: str) -> None:
        from serving.celery_app import INFERENCE_TASK

        try:
            queue = self.queue_of(job_id)
        except OperationalError as exc:
            # The job is stored as queued: the reconciler publishes it once the database is back.
            log.warning("job %s not published yet (database unreachable: %s)", job_id, exc.orig)
            return
        if queue is None:
            # No worker would ever take it: say so on the job instead of queueing it forever.
            self._fail(job_id, "Its checkpoint is no longer offered here; nothing was run.")
            return
        try:
            self.app.send_task(  # type: ignore[attr-defined]
                INFERENCE_TASK,
                args=[job_id],
                queue=queue,
                task_id=job_id,
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
            )
        except Exception as exc:
            log.warning("could not publish job %s: %s", job_id, exc)
            self._fail(job_id, "The job queue is unreachable; nothing was run. Try again shortly.")
            raise Unavailable(
                "The job queue is unreachable right now; your question was not run. "
                "Try again in a minute."
            ) from None

    def _fail(self, job_id: str, reason: str) -> None:
        with transaction(self.factory) as db:
            job = db.get(Job, job_id)
            if job is not None and not job.status.final:
                job.status = JobStatus.failed
                job.error = reason
                job.finished_at = utcnow()
