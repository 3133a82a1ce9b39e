"""Celery tasks: as thin as web views. They take job ids, never payloads."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init

from serving.celery_app import INFERENCE_QUEUE, INFERENCE_TASK, RECONCILE_TASK
from serving.execution import JobContext, run_job

log = logging.getLogger(__name__)

# One job context (database, store, model) per worker process, made after the fork.
_context: JobContext | None = None
# False in a worker that does not consume an inference queue (a CPU/beat worker).
preload_model = True
# The named checkpoint this worker loads and serves (None: the settings' default); set by
# `medplib worker` before the pool forks, so every child inherits it.
served_checkpoint: str | None = None


def _make_context() -> JobContext:
    from serving.platform import build_job_context
    from serving.settings import load_settings_or_exit

    settings = load_settings_or_exit()
    ctx = build_job_context(settings, serve=served_checkpoint or settings.default_checkpoint)
    ctx.timeout_errors = (SoftTimeLimitExceeded,)
    return ctx


@worker_process_init.connect
def _load_model(**_: Any) -> None:
    # Runs in each pool child (and once for the solo pool): CUDA is first touched here,
    # never in the parent that forks.
    global _context
    if not preload_model:
        return
    _context = _make_context()
    _context.predictor.get()
    log.info("model loaded: %s", _context.predictor.get().checkpoint_id)


def context() -> JobContext:
    global _context
    if _context is None:
        _context = _make_context()
    return _context


@shared_task(name=INFERENCE_TASK, acks_late=True, reject_on_worker_lost=True)
def run_inference(job_id: str) -> str:
    status = run_job(job_id, ctx=context())
    return status.value if status is not None else "missing"


@shared_task(name=RECONCILE_TASK, bind=True, ignore_result=True)
def reconcile(self: Any) -> int:
    """The periodic reconciler (beat): re-queue dead workers' jobs, re-publish lost ones."""
    from serving.db import session_factory
    from serving.platform import celery_runner
    from serving.settings import load_settings_or_exit

    settings = load_settings_or_exit()
    runner = celery_runner(settings, self.app, session_factory(settings.database_url))
    return len(runner.reconcile())


def consumes_inference(queues: str, inference_queues: Iterable[str] = (INFERENCE_QUEUE,)) -> bool:
    """Whether a worker consuming ``queues`` (comma-separated) answers questions."""
    return not {q.strip() for q in queues.split(",")}.isdisjoint(inference_queues)
