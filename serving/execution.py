"""Running one job: the code path shared by the embedded runner and Celery workers.

Each state change is its own transaction, so a crash leaves the job either queued,
running (picked up again, with its attempts counted) or final — never half-written.
Every other way out of a claimed job records an end: the answer, or failed with a reason.
While it runs, a heartbeat thread stamps the row, so a job whose worker died is found by
its silence (see `serving.reconcile`), not after the broker's visibility timeout.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from medplib.errors import UserInputError
from medplib.geometry import document_to_masks
from medplib.masks import encode_rle, mask_area, mask_bbox_xyxy_px, mask_to_png_bytes
from serving.db import transaction
from serving.job_events import JobEvents, Publisher, Throttled
from serving.models import Job, JobStatus, Mask, Turn, utcnow
from serving.predictors import MaskResult, PredictionResult, PredictorHolder
from serving.reconcile import poison_message, timed_out_message
from serving.services.images import load_display
from serving.settings import DEFAULT_CHECKPOINT
from serving.store import ArtefactStore

log = logging.getLogger(__name__)

T = TypeVar("T")

# Progress writes are throttled: the UI polls about once a second.
_PROGRESS_INTERVAL_S = 0.25
_PROGRESS_BACKOFF_S = 5.0


class JobTimedOut(Exception):
    """Raised inside a job when its time limit is reached."""


@dataclass
class JobContext:
    factory: sessionmaker[Session]
    store: ArtefactStore
    # The predictor of the checkpoint named ``checkpoint``: a job with none recorded runs on it.
    predictor: PredictorHolder
    max_attempts: int = 3
    soft_time_limit_s: int = 240
    # The hard limit: a running job silent for longer than this has lost its worker.
    time_limit_s: int = 300
    heartbeat_every_s: float = 10.0
    # How long the final write (answer or failure) waits out a locked or unreachable database.
    finish_retry_s: float = 60.0
    worker_host: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    # Exception types that mean "time limit reached" (Celery's SoftTimeLimitExceeded).
    timeout_errors: tuple[type[BaseException], ...] = (JobTimedOut,)
    # Notices to waiting pages: straight into this process's JobEvents (embedded), or on
    # Redis for the web processes to relay (a Celery worker).
    events: Publisher = field(default_factory=JobEvents)
    # The model call (`predict`); on a ZeroGPU Space it is wrapped to hold the GPU.
    predict: Callable[[str, _Claim, JobContext], PredictionResult] = field(
        default_factory=lambda: predict  # defined below; looked up when a context is made
    )
    checkpoint: str = DEFAULT_CHECKPOINT
    # The other checkpoints this process may run, each loaded on first use: every one in
    # embedded mode (both sides of an arena match run here), none in a worker, which serves
    # its own checkpoint's queue only.
    others: dict[str, PredictorHolder] = field(default_factory=dict)

    def holder_for(self, name: str | None) -> PredictorHolder:
        """The predictor of a job's checkpoint; a checkpoint not served here fails the job."""
        if name is None or name == self.checkpoint:
            return self.predictor
        holder = self.others.get(name)
        if holder is None:
            raise UserInputError(
                f"The checkpoint {name!r} is not served here (removed from the settings, or "
                "the job reached another checkpoint's worker); ask again."
            )
        return holder


@dataclass
class _Claim:
    turn_id: str
    question: str
    regions: list[dict[str, Any]]
    image_key: str
    height_px: int
    width_px: int
    history: list[tuple[str, str]]
    checkpoint: str | None = None


def run_job(job_id: str, *, ctx: JobContext) -> JobStatus | None:
    """Run a job once; safe to call again for the same id (re-delivery does nothing twice).

    Raises only when the database refuses even the failure record for ``finish_retry_s``;
    the job's heartbeat has stopped by then, so the watchdog ends it.
    """
    try:
        claim = _claim(job_id, ctx=ctx)
        if isinstance(claim, JobStatus) or claim is None:
            return claim
        ctx.events.publish(job_id)  # running
        with _Heartbeat(job_id, ctx=ctx):
            outcome = _answer(job_id, claim, ctx=ctx)
        if isinstance(outcome, JobStatus):
            return outcome
        return _retrying(job_id, lambda: _fail(job_id, outcome, ctx=ctx), ctx=ctx)
    finally:
        ctx.events.publish(job_id)  # final (or left for the watchdog)


def _answer(job_id: str, claim: _Claim, *, ctx: JobContext) -> JobStatus | str:
    """Predict and store; the final status, or the reason to fail the job with."""
    started = time.perf_counter()
    try:
        prediction = ctx.predict(job_id, claim, ctx)
    except UserInputError as exc:
        return str(exc)
    except ctx.timeout_errors:
        return timed_out_message(ctx.soft_time_limit_s)
    except Exception as exc:  # the model must never take the worker down with it
        log.exception("job %s failed", job_id)
        return (
            f"The model could not answer this question ({type(exc).__name__}); "
            "the error was logged for the operators."
        )
    seconds = time.perf_counter() - started
    try:
        return _retrying(
            job_id, lambda: _store(job_id, claim, prediction, seconds, ctx=ctx), ctx=ctx
        )
    except ctx.timeout_errors:
        return timed_out_message(ctx.soft_time_limit_s)
    except Exception as exc:  # an unwritable store or a database gone for good
        log.exception("job %s: the answer could not be saved", job_id)
        return (
            f"The answer could not be saved ({type(exc).__name__}); "
            "the error was logged for the operators."
        )


def _retrying(job_id: str, write: Callable[[], T], *, ctx: JobContext) -> T:
    """A final write, tried again while the database is locked or unreachable."""
    deadline = time.monotonic() + ctx.finish_retry_s
    delay = 0.2
    while True:
        try:
            return write()
        except OperationalError as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("job %s: database busy or down (%s); retrying", job_id, exc.orig)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class _Heartbeat:
    """Stamps the job's row every few seconds while this process is running it.

    A thread of its own, so a long model step still beats; a beat that cannot be
    written (database busy) is skipped, and the worker dying silences it.
    """

    def __init__(self, job_id: str, *, ctx: JobContext) -> None:
        self.job_id, self.ctx = job_id, ctx
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        # A beat stuck on a locked database ends by itself; the job need not wait for it.
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.wait(self.ctx.heartbeat_every_s):
            try:
                beat(self.job_id, ctx=self.ctx)
            except Exception as exc:
                log.warning("job %s: heartbeat skipped (%s)", self.job_id, type(exc).__name__)


def beat(job_id: str, *, ctx: JobContext) -> None:
    # Only while this worker still holds the job: never revive a finished or re-queued one.
    with transaction(ctx.factory) as db:
        db.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.status == JobStatus.running,
                Job.worker_host == ctx.worker_host[:255],
            )
            .values(heartbeat_at=utcnow())
        )


def predict(job_id: str, claim: _Claim, ctx: JobContext) -> Any:
    """The model's part of a job: encode the image (cached per image) and answer.

    Kept apart from the bookkeeping around it so that a GPU-lending wrapper (ZeroGPU's
    ``spaces.GPU``, see `serving.zerogpu`) holds the device for the model call only.
    """
    masks_in = document_to_masks(claim.regions, height_px=claim.height_px, width_px=claim.width_px)
    predictor = ctx.holder_for(claim.checkpoint).prepare(
        claim.image_key, lambda: load_display(ctx.store, claim.image_key)
    )
    stream = Throttled(ctx.events, job_id)
    extra = {"on_text": stream.text} if streams_text(predictor) else {}
    try:
        return predictor.ask(
            claim.question,
            regions=masks_in,
            history=claim.history,
            progress=_progress_writer(job_id, ctx=ctx),
            **extra,
        )
    finally:
        stream.flush()


def streams_text(predictor: Any) -> bool:
    """Whether ``predictor.ask`` takes ``on_text`` (plug-in predictors need not)."""
    try:
        return "on_text" in inspect.signature(predictor.ask).parameters
    except (TypeError, ValueError):
        return False


def _claim(job_id: str, *, ctx: JobContext) -> _Claim | JobStatus | None:
    with transaction(ctx.factory) as db:
        job = db.get(Job, job_id, with_for_update=True)
        if job is None:
            log.warning("job %s does not exist; dropping it", job_id)
            return None
        if job.status.final:
            return job.status
        if job.attempts >= ctx.max_attempts:
            # Every earlier attempt ended with its worker dying: this job is poison.
            job.status = JobStatus.failed
            job.error = poison_message(job.attempts)
            job.finished_at = utcnow()
            return job.status
        job.attempts += 1
        job.status = JobStatus.running
        job.started_at = job.heartbeat_at = utcnow()
        job.worker_host = ctx.worker_host[:255]
        job.phase = "starting"
        turn = job.turn
        session = turn.session
        history = [
            (t.question, t.answer)
            for t in db.scalars(
                select(Turn)
                .where(Turn.session_id == session.id, Turn.index < turn.index)
                .order_by(Turn.index)
            )
            if t.answer is not None
        ]
        return _Claim(
            turn_id=turn.id,
            question=turn.question,
            regions=list(turn.regions or []),
            image_key=session.image.display_key,
            height_px=session.image.height_px,
            width_px=session.image.width_px,
            history=history,
            checkpoint=job.checkpoint,
        )


def _progress_writer(job_id: str, *, ctx: JobContext) -> Any:
    last = [0.0]

    def write(phase: str, fraction: float) -> None:
        now = time.monotonic()
        if now - last[0] < _PROGRESS_INTERVAL_S and fraction < 1.0:
            return
        last[0] = now
        try:
            with transaction(ctx.factory) as db:
                job = db.get(Job, job_id)
                if job is not None and job.status is JobStatus.running:
                    job.phase = phase[:32]
                    job.progress = float(min(max(fraction, 0.0), 1.0))
            ctx.events.publish(job_id)
        except OperationalError as exc:
            # Progress is for display only: a busy database must not fail the answer,
            # nor slow the model with a wait for the lock at every step.
            log.warning("job %s: progress not recorded (%s)", job_id, exc.orig)
            last[0] = time.monotonic() + _PROGRESS_BACKOFF_S

    return write


def _fail(job_id: str, message: str, *, ctx: JobContext) -> JobStatus:
    with transaction(ctx.factory) as db:
        job = db.get(Job, job_id, with_for_update=True)
        if job is None or job.status.final:
            return job.status if job is not None else JobStatus.failed
        job.status = JobStatus.failed
        job.error = message
        job.finished_at = utcnow()
        return job.status


def mirror_agreement_of(mask: MaskResult) -> float | None:
    """The mask's mirror agreement as stored: a Dice in [0, 1], else None.

    Optional on the protocol: a predictor without a mirror check has no such attribute. A value
    that is no Dice (NaN, negative, over 1, not a number) is a predictor's bug; the answer is
    kept without it rather than failed or shown a number that means nothing.
    """
    value = getattr(mask, "mirror_agreement", None)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0.0 <= number <= 1.0:  # NaN fails this too
        log.warning("mirror agreement %r is not a Dice in [0, 1]; stored without it", value)
        return None
    return number


def _store(
    job_id: str, claim: _Claim, prediction: PredictionResult, seconds: float, *, ctx: JobContext
) -> JobStatus:
    # Mask files first (content-addressed, so a repeat writes nothing new), rows after.
    stored: list[Mask] = []
    for index, mask in enumerate(prediction.masks):
        binary = mask.mask.astype(bool)
        bbox = mask_bbox_xyxy_px(binary)
        stored.append(
            Mask(
                index=index,
                rle=encode_rle(binary),
                png_key=ctx.store.put(mask_to_png_bytes(binary), kind="masks", suffix=".png"),
                area_px=int(mask_area(binary)),
                bbox_xyxy_px=list(bbox) if bbox else None,
                score=None if mask.score is None else float(mask.score),
                mirror_agreement=mirror_agreement_of(mask),
            )
        )
    routing = prediction.routing.to_dict() if prediction.routing is not None else None
    with transaction(ctx.factory) as db:
        job = db.get(Job, job_id, with_for_update=True)
        if job is None or job.status is not JobStatus.running:
            # Cancelled meanwhile, or another delivery finished first: keep what is there.
            return job.status if job is not None else JobStatus.failed
        turn = db.get(Turn, claim.turn_id)
        assert turn is not None
        if not turn.masks:
            for row in stored:
                row.turn_id = turn.id
                db.add(row)
        turn.answer = prediction.answer
        turn.raw_answer = prediction.raw_answer
        turn.checkpoint_id = ctx.holder_for(claim.checkpoint).get().checkpoint_id
        turn.routing = routing
        turn.timings = {k: float(v) for k, v in (prediction.timings or {}).items()}
        turn.warnings = list(prediction.warnings or [])
        turn.answered_at = utcnow()
        job.status = JobStatus.succeeded
        job.progress = 1.0
        job.phase = "done"
        job.finished_at = utcnow()
        job.model_seconds = seconds
        job.error = None
        return job.status
