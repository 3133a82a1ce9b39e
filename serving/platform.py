"""Assembling the platform for one process from its settings.

Embedded and distributed mode differ only in the runner built here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from serving.db import session_factory, transaction
from serving.execution import JobContext, predict
from serving.job_events import JobEvents, Publisher, RedisPublisher, RedisRelay
from serving.predictors import PredictorHolder, load_predictor
from serving.reconcile import heartbeat_interval_s, watchdog_interval_s
from serving.runners import CeleryRunner, EmbeddedRunner, Runner
from serving.services import arena, turns
from serving.services.accounts import Actor
from serving.services.arena import MatchStarted
from serving.services.errors import ServiceError, Unavailable
from serving.services.turns import JobView, job_view
from serving.settings import Settings
from serving.store import ArtefactStore
from serving.zerogpu import gpu_bound

T = TypeVar("T")
log = logging.getLogger(__name__)


def build_job_context(
    settings: Settings,
    *,
    holder: PredictorHolder | None = None,
    holders: Mapping[str, PredictorHolder] | None = None,
    serve: str | None = None,
) -> JobContext:
    """The context jobs run in: every named checkpoint, each loaded on first use, or with
    ``serve`` (a worker) that one checkpoint only.

    ``holder`` stands in for the main checkpoint's predictor (the served one, else the
    settings' default) and ``holders`` for others by name: tests and benchmarks.
    """
    registry = settings.checkpoint_registry
    main = serve or settings.default_checkpoint
    if main not in registry:
        raise ValueError(f"no checkpoint named {main!r}; the settings name {', '.join(registry)}")
    given = dict(holders or {})

    def holder_of(name: str) -> PredictorHolder:
        if name in given:
            return given[name]
        path = registry[name]
        return PredictorHolder(
            lambda: load_predictor(
                settings.predictor,
                checkpoint=path,
                device=settings.device,
                noop_delay_s=settings.noop_delay_s,
            )
        )

    # Embedded jobs notify the pages of this process; a worker's go out on Redis.
    events: Publisher = JobEvents() if settings.embedded else RedisPublisher(settings.broker_url)
    return JobContext(
        events=events,
        factory=session_factory(settings.database_url),
        store=ArtefactStore(settings.artefact_dir),
        predictor=holder or holder_of(main),
        checkpoint=main,
        others={} if serve else {name: holder_of(name) for name in registry if name != main},
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
    # What waiting pages subscribe to: the embedded runner's notices, or the workers' relayed.
    events: JobEvents

    def call(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        """Run one service function in its own transaction.

        A database that cannot be reached becomes :class:`Unavailable` and nothing is kept;
        any other database error is logged and becomes one sentence without its SQL.
        """
        try:
            with transaction(self.factory) as db:
                return fn(db, **kwargs)
        except OperationalError:
            raise Unavailable(
                "The database is unreachable right now; nothing was saved. Try again shortly."
            ) from None
        except SQLAlchemyError:
            log.exception("service call %s failed", getattr(fn, "__name__", "?"))
            raise ServiceError(
                "The server could not complete that request; nothing was saved. Try again, "
                "and tell the operators if it keeps happening."
            ) from None

    def ask(
        self,
        *,
        actor: Actor,
        question: Any,
        regions: Any,
        session_id: str | None = None,
        image_id: str | None = None,
        drawn: Any = None,
        filename: str | None = None,
    ) -> JobView:
        """`turns.ask` in its own transaction, then the job to the runner; the job as it is
        after that (a fast runner may have started it already)."""
        job = self.call(
            turns.ask,
            actor=actor,
            question=question,
            regions=regions,
            settings=self.settings,
            runner=self.runner.name,
            session_id=session_id,
            image_id=image_id,
            drawn=drawn,
            filename=filename,
        )
        self.runner.submit(job.id)
        return self.call(job_view, job_id=job.id)

    def start_match(self, **kwargs: Any) -> MatchStarted:
        """`arena.start_match` in its own transaction, then both sides' jobs to the runner."""
        started = self.call(
            arena.start_match, settings=self.settings, runner=self.runner.name, **kwargs
        )
        for job_id in started.job_ids:
            self.runner.submit(job_id)
        return started


def build_platform(
    settings: Settings,
    *,
    holder: PredictorHolder | None = None,
    holders: Mapping[str, PredictorHolder] | None = None,
) -> Platform:
    ctx = build_job_context(settings, holder=holder, holders=holders)
    runner: Runner
    if settings.embedded:
        assert isinstance(ctx.events, JobEvents)
        events = ctx.events
        runner = EmbeddedRunner(ctx)
    else:
        from serving.celery_app import create_celery

        events = JobEvents()
        events.live = False  # until the relay has subscribed
        runner = celery_runner(settings, create_celery(settings), ctx.factory)
        runner.relay = RedisRelay(settings.broker_url, events)
    return Platform(
        settings=settings,
        factory=ctx.factory,
        store=ctx.store,
        runner=runner,
        ctx=ctx,
        events=events,
    )


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
        queues=settings.checkpoint_queues,
        default_checkpoint=settings.default_checkpoint,
    )
