"""Asking: a question becomes a turn and a queued job, in one transaction.

`ask` is the one way in: `Platform.ask` runs it and hands the job to the runner, and the web
page, the API and the benchmarks all ask through that.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from serving.models import ChatSession, Job, JobStatus, Turn, User, utcnow
from serving.reconcile import fail_if_stale
from serving.services.accounts import Actor
from serving.services.checkpoints import default_checkpoint
from serving.services.errors import Forbidden, InvalidInput, NotFound, RateLimited
from serving.services.sessions import (
    can_read,
    create_session,
    get_own_session,
    get_session,
    set_session_regions,
    validate_regions,
)
from serving.services.validation import well_formed_id
from serving.settings import Settings
from serving.views import TurnData, turn_data

_STILL_ANSWERING = "The previous question is still being answered; wait or cancel it."


def clean_question(question: Any, *, max_chars: int) -> str:
    if not isinstance(question, str):
        raise InvalidInput("The question must be text.")
    # Control characters can hide text from reviewers; keep newlines and tabs only.
    cleaned = "".join(ch for ch in question if ch.isprintable() or ch in "\n\t").strip()
    if not cleaned:
        raise InvalidInput("Type a question first.")
    if len(cleaned) > max_chars:
        raise InvalidInput(
            f"The question has {len(cleaned):,} characters; the limit is {max_chars:,}. "
            "Shorten it and ask again."
        )
    return cleaned


def check_rate(
    db: Session, *, actor: Actor, per_minute: int, per_address_per_minute: int = 0
) -> None:
    """Refuse an anonymous user's question beyond its own per-minute limit, or beyond the
    limit of all anonymous users first seen at its address (0: no address limit)."""
    if not actor.anonymous:
        return
    since = utcnow() - timedelta(minutes=1)
    recent = db.scalar(
        select(func.count(Job.id)).where(
            Job.submitted_by_id == actor.user_id, Job.queued_at >= since
        )
    )
    if (recent or 0) >= per_minute:
        raise RateLimited(
            f"Anonymous users can ask {per_minute} questions a minute; wait a moment or log in."
        )
    address = db.scalar(select(User.created_from).where(User.id == actor.user_id))
    if not per_address_per_minute or address is None:
        return
    from_address = db.scalar(
        select(func.count(Job.id))
        .join(User, User.id == Job.submitted_by_id)
        .where(User.anonymous.is_(True), User.created_from == address, Job.queued_at >= since)
    )
    if (from_address or 0) >= per_address_per_minute:
        raise RateLimited(
            "Too many questions from your network address in the last minute; wait a moment "
            "or log in."
        )


def submit_turn(
    db: Session,
    *,
    actor: Actor,
    session_id: str,
    question: Any,
    regions: Any,
    settings: Settings,
    runner: str,
) -> Job:
    """Store the question as the session's next turn with a queued job; return the job.

    The caller commits, then hands the job id to a runner.
    """
    session = get_own_session(db, actor=actor, session_id=session_id)
    text = clean_question(question, max_chars=settings.max_question_chars)
    doc = validate_regions(regions, image=session.image, max_regions=settings.max_regions)
    # One question at a time per session: the session row is locked (PostgreSQL; SQLite
    # transactions run one at a time anyway), so a second ask waits for the first to commit
    # and then sees its pending job instead of racing it for the next turn index.
    db.execute(select(ChatSession.id).where(ChatSession.id == session.id).with_for_update())
    check_rate(
        db,
        actor=actor,
        per_minute=settings.anon_jobs_per_minute,
        per_address_per_minute=settings.anon_jobs_per_address_per_minute,
    )
    count = db.scalar(select(func.count(Turn.id)).where(Turn.session_id == session.id)) or 0
    if count >= settings.max_turns_per_session:
        raise InvalidInput(
            f"This session has reached {settings.max_turns_per_session} turns; start a new one."
        )
    pending = db.scalars(
        select(Job)
        .join(Turn, Turn.id == Job.turn_id)
        .where(Turn.session_id == session.id, Job.status.in_([JobStatus.queued, JobStatus.running]))
        .with_for_update()
    ).all()
    # A job no worker is really running (its worker died) must not block the session.
    if any(not fail_if_stale(job, time_limit_s=settings.job_time_limit_s) for job in pending):
        raise InvalidInput(_STILL_ANSWERING)
    turn = Turn(session_id=session.id, index=count, question=text, regions=doc)
    # Recorded now, so the job runs where it was sent even if an admin picks another later.
    checkpoint = default_checkpoint(db, settings=settings)
    job = Job(turn=turn, submitted_by_id=actor.user_id, runner=runner, checkpoint=checkpoint)
    try:
        # Should another ask still have taken this turn's index, it lost: said in words.
        with db.begin_nested():
            db.add_all([turn, job])
    except IntegrityError:
        raise InvalidInput(_STILL_ANSWERING) from None
    session.updated_at = utcnow()
    db.flush()
    return job


def ask(
    db: Session,
    *,
    actor: Actor,
    question: Any,
    regions: Any,
    settings: Settings,
    runner: str,
    session_id: str | None = None,
    image_id: str | None = None,
    drawn: Any = None,
    filename: str | None = None,
) -> JobView:
    """Ask in one of the actor's sessions, or, given ``image_id`` and no ``session_id``, in a
    new session on that image (``filename`` being the name the actor uploaded it under).

    ``regions`` go with the question; ``drawn`` (every region on the canvas) is kept with the
    session for a reopen to restore, and None leaves the session's as they are. Session,
    regions, turn and job are stored together, so a refused question leaves no empty
    session behind. The caller commits, then hands the job id to a runner.
    """
    if image_id and not session_id:
        session_id = create_session(
            db,
            actor=actor,
            image_id=image_id,
            regions=drawn,
            max_regions=settings.max_regions,
            filename=filename,
        ).id
    elif drawn is not None:
        set_session_regions(
            db,
            actor=actor,
            session_id=session_id or "",
            regions=drawn,
            max_regions=settings.max_regions,
        )
    job = submit_turn(
        db,
        actor=actor,
        session_id=session_id or "",
        question=question,
        regions=regions,
        settings=settings,
        runner=runner,
    )
    return job_view(db, job_id=job.id)


@dataclass(frozen=True)
class JobView:
    id: str
    status: JobStatus
    position: int | None  # 1 = next to run; None once running or finished
    progress: float
    phase: str | None
    error: str | None
    attempts: int
    session_id: str
    turn_index: int
    started_at: datetime | None = None


_NO_JOB = "That job does not exist."


def job_view(db: Session, *, job_id: str, actor: Actor | None = None) -> JobView:
    """A job's state; with ``actor``, only for one who may read its session.

    A job of a session the actor cannot read is answered like a missing one.
    """
    if not well_formed_id(job_id):
        raise NotFound(_NO_JOB)
    row = db.execute(
        select(Job, Turn.session_id, Turn.index)
        .join(Turn, Turn.id == Job.turn_id)
        .where(Job.id == job_id)
    ).first()
    if row is None:
        raise NotFound(_NO_JOB)
    job, session_id, turn_index = row
    if actor is not None:
        session = db.get(ChatSession, session_id)
        if session is None or not can_read(db, actor=actor, session=session):
            raise NotFound(_NO_JOB)
    position = None
    if job.status is JobStatus.queued:
        ahead = db.scalar(
            select(func.count(Job.id)).where(
                Job.status == JobStatus.queued, Job.queued_at < job.queued_at
            )
        )
        position = int(ahead or 0) + 1
    return JobView(
        id=job.id,
        status=job.status,
        position=position,
        progress=job.progress,
        phase=job.phase,
        error=job.error,
        attempts=job.attempts,
        session_id=session_id,
        turn_index=turn_index,
        started_at=job.started_at,
    )


@dataclass(frozen=True)
class JobOutcome:
    job: JobView
    turn: TurnData | None  # the question and its answer, once the job has ended


def job_outcome(db: Session, *, actor: Actor, job_id: str) -> JobOutcome:
    """A job's state and, once it has ended, its turn; someone else's job is a missing one."""
    job = job_view(db, job_id=job_id, actor=actor)
    if not job.status.final:
        return JobOutcome(job=job, turn=None)
    session = get_session(db, actor=actor, session_id=job.session_id)
    turn = next(t for t in session.turns if t.index == job.turn_index)
    return JobOutcome(job=job, turn=turn_data(turn))


def cancel_job(db: Session, *, actor: Actor, job_id: str) -> JobView:
    job = db.get(Job, job_id) if well_formed_id(job_id) else None
    if job is None:
        raise NotFound(_NO_JOB)
    session = db.get(ChatSession, job.turn.session_id)
    if session is None or (session.owner_id != actor.user_id and not actor.has()):
        # Only those who can see the session learn that the job exists.
        if session is not None and can_read(db, actor=actor, session=session):
            raise Forbidden("Only the session's owner can cancel this question.")
        raise NotFound(_NO_JOB)
    if not job.status.final:
        job.status = JobStatus.cancelled
        job.error = "Cancelled."
        job.finished_at = utcnow()
    db.flush()
    return job_view(db, job_id=job_id)


def live_job_ids(db: Session) -> list[str]:
    """Jobs not yet finished, oldest first (what a restarted runner must pick up again)."""
    return list(
        db.scalars(
            select(Job.id)
            .where(Job.status.in_([JobStatus.queued, JobStatus.running]))
            .order_by(Job.queued_at)
        )
    )
