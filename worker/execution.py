"""Running one job: the code path shared by the embedded runner and Celery workers.

Each state change is its own transaction, so a crash leaves the job either queued,
running (picked up again, with its attempts counted) or final — never half-written.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from medplib.errors import UserInputError
from medplib.geometry import document_to_masks
from medplib.masks import encode_rle, mask_area, mask_bbox_xyxy_px, mask_to_png_bytes
from worker.db import transaction
from worker.models import Job, JobStatus, Mask, Turn, utcnow
from worker.predictors import PredictorHolder
from worker.services.images import load_display
from worker.store import ArtefactStore

log = logging.getLogger(__name__)

# Progress writes are throttled: the UI polls about once a second.
_PROGRESS_INTERVAL_S = 0.25


class JobTimedOut(Exception):
    """Raised inside a job when its time limit is reached."""


@dataclass
class JobContext:
    factory: sessionmaker[Session]
    store: ArtefactStore
    predictor: PredictorHolder
    max_attempts: int = 3
    soft_time_limit_s: int = 240
    worker_host: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    # Exception types that mean "time limit reached" (Celery's SoftTimeLimitExceeded).
    timeout_errors: tuple[type[BaseException], ...] = (JobTimedOut,)
    # The model call (`predict`); on a ZeroGPU Space it is wrapped to hold the GPU.
    predict: Callable[[str, _Claim, JobContext], Any] = field(
        default_factory=lambda: predict  # defined below; looked up when a context is made
    )


@dataclass
class _Claim:
    turn_id: str
    question: str
    regions: list[dict[str, Any]]
    image_key: str
    height_px: int
    width_px: int
    history: list[tuple[str, str]]


def run_job(job_id: str, *, ctx: JobContext) -> JobStatus | None:
    """Run a job once; safe to call again for the same id (re-delivery does nothing twice)."""
    claim = _claim(job_id, ctx=ctx)
    if isinstance(claim, JobStatus) or claim is None:
        return claim
    started = time.perf_counter()
    try:
        prediction = ctx.predict(job_id, claim, ctx)
    except UserInputError as exc:
        return _fail(job_id, str(exc), ctx=ctx)
    except ctx.timeout_errors:
        return _fail(
            job_id, f"Timed out after {ctx.soft_time_limit_s} s; try a shorter question.", ctx=ctx
        )
    except Exception as exc:  # the model must never take the worker down with it
        log.exception("job %s failed", job_id)
        return _fail(
            job_id,
            f"The model could not answer this question ({type(exc).__name__}); "
            "the error was logged for the operators.",
            ctx=ctx,
        )
    return _store(job_id, claim, prediction, time.perf_counter() - started, ctx=ctx)


def predict(job_id: str, claim: _Claim, ctx: JobContext) -> Any:
    """The model's part of a job: encode the image (cached per image) and answer.

    Kept apart from the bookkeeping around it so that a GPU-lending wrapper (ZeroGPU's
    ``spaces.GPU``, see `worker.zerogpu`) holds the device for the model call only.
    """
    masks_in = document_to_masks(claim.regions, height_px=claim.height_px, width_px=claim.width_px)
    predictor = ctx.predictor.prepare(
        claim.image_key, lambda: load_display(ctx.store, claim.image_key)
    )
    return predictor.ask(
        claim.question,
        regions=masks_in,
        history=claim.history,
        progress=_progress_writer(job_id, ctx=ctx),
    )


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
            job.error = (
                f"This question stopped the worker {job.attempts} times and will not be "
                "retried; try a different image or question."
            )
            job.finished_at = utcnow()
            return job.status
        job.attempts += 1
        job.status = JobStatus.running
        job.started_at = utcnow()
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
        )


def _progress_writer(job_id: str, *, ctx: JobContext) -> Any:
    last = [0.0]

    def write(phase: str, fraction: float) -> None:
        now = time.monotonic()
        if now - last[0] < _PROGRESS_INTERVAL_S and fraction < 1.0:
            return
        last[0] = now
        with transaction(ctx.factory) as db:
            job = db.get(Job, job_id)
            if job is not None and job.status is JobStatus.running:
                job.phase = phase[:32]
                job.progress = float(min(max(fraction, 0.0), 1.0))

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


def _store(
    job_id: str, claim: _Claim, prediction: Any, seconds: float, *, ctx: JobContext
) -> JobStatus:
    # Mask files first (content-addressed, so a repeat writes nothing new), rows after.
    stored = []
    for mask in prediction.masks:
        binary = mask.mask.astype(bool)
        stored.append(
            {
                "rle": encode_rle(binary),
                "png_key": ctx.store.put(mask_to_png_bytes(binary), kind="masks", suffix=".png"),
                "area_px": int(mask_area(binary)),
                "bbox": mask_bbox_xyxy_px(binary),
                "score": None if mask.score is None else float(mask.score),
            }
        )
    routing = prediction.routing.to_dict() if hasattr(prediction.routing, "to_dict") else None
    with transaction(ctx.factory) as db:
        job = db.get(Job, job_id, with_for_update=True)
        if job is None or job.status is not JobStatus.running:
            # Cancelled meanwhile, or another delivery finished first: keep what is there.
            return job.status if job is not None else JobStatus.failed
        turn = db.get(Turn, claim.turn_id)
        assert turn is not None
        if not turn.masks:
            for index, item in enumerate(stored):
                db.add(
                    Mask(
                        turn_id=turn.id,
                        index=index,
                        rle=item["rle"],
                        png_key=item["png_key"],
                        area_px=item["area_px"],
                        bbox_xyxy_px=list(item["bbox"]) if item["bbox"] else None,
                        score=item["score"],
                    )
                )
        turn.answer = prediction.answer
        turn.raw_answer = getattr(prediction, "raw_answer", prediction.answer)
        turn.checkpoint_id = ctx.predictor.get().checkpoint_id
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
