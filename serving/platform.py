"""Assembling the platform for one process from its settings.

Embedded and distributed mode differ only in the runner built here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from serving.db import session_factory, transaction
from serving.execution import JobContext, predict
from serving.predictors import PredictorHolder, load_predictor
from serving.reconcile import heartbeat_interval_s, watchdog_interval_s
from serving.runners import CeleryRunner, EmbeddedRunner, Runner
from serving.services.accounts import Actor
from serving.services.errors import Unavailable
from serving.services.turns import JobView, job_view, submit_turn
from serving.settings import Settings
from serving.store import ArtefactStore
from serving.zerogpu import gpu_bound

T = TypeVar("T")


def build_job_context(settings: Settings, *, holder: PredictorHolder | None = None) -> JobContext:
    return JobContext(
        factory=session_factory(settings.database_url),
        store=ArtefactStore(settings.artefact_dir),
        predictor=holder
        or PredictorHolder(
            lambda: load_predictor(
                settings.predictor,
                checkpoint=settings.checkpoint,
                device=settings.device,
                noop_delay_s=settings.noop_delay_s,
            )
        ),
        max_attempts=settings.job_max_attempts,
        soft_time_limit_s=settings.job_soft_time_limit_s,
        time_limit_s=settings.job_time_limit_s,
        heartbeat_every_s=heartbeat_interval_s(settings.job_time_limit_s),
        predict=gpu_bound(predict, duration_s=settings.job_soft_time_limit_s),
    )


@dataclass
class Platform:
    settings: Settings
    factory: sessionmaker[Session]
    store: ArtefactStore
    runner: Runner
    ctx: JobContext

    def call(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        """Run one service function in its own transaction.

        A database that cannot be reached becomes :class:`Unavailable` and nothing is kept.
        """
        try:
            with transaction(self.factory) as db:
                return fn(db, **kwargs)
        except OperationalError:
            raise Unavailable(
                "The database is unreachable right now; nothing was saved. Try again shortly."
            ) from None

    def ask(self, *, actor: Actor, session_id: str, question: Any, regions: Any) -> JobView:
        job = self.call(
            submit_turn,
            actor=actor,
            session_id=session_id,
            question=question,
            regions=regions,
            settings=self.settings,
            runner=self.runner.name,
        )
        self.runner.submit(job.id)
        return self.call(job_view, job_id=job.id)


def build_platform(settings: Settings, *, holder: PredictorHolder | None = None) -> Platform:
    ctx = build_job_context(settings, holder=holder)
    runner: Runner
    if settings.embedded:
        runner = EmbeddedRunner(ctx)
    else:
        from serving.celery_app import create_celery

        runner = celery_runner(settings, create_celery(settings), ctx.factory)
    return Platform(settings=settings, factory=ctx.factory, store=ctx.store, runner=runner, ctx=ctx)


def celery_runner(settings: Settings, app: Any, factory: sessionmaker[Session]) -> CeleryRunner:
    """The web process's runner; the ``medplib.reconcile`` beat task builds the same."""
    return CeleryRunner(
        app,
        factory,
        reconcile_every_s=watchdog_interval_s(settings.job_time_limit_s),
        # A running job older than its hard limit (plus margin) has lost its worker.
        running_grace_s=settings.job_time_limit_s + 60,
        time_limit_s=settings.job_time_limit_s,
        max_attempts=settings.job_max_attempts,
    )
