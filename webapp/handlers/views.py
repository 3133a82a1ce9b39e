"""Read models: plain copies of what a screen shows, taken inside one transaction.

ORM rows do not outlive their transaction here (lazy relations would fail later), so each
reader checks access through the services and copies the fields the UI needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from serving.models import ChatSession, Job, LinkKind, LinkRole, Turn
from serving.services.accounts import Actor
from serving.services.sessions import get_session
from serving.services.shares import open_shared_session, resolve_link


@dataclass(frozen=True)
class MaskData:
    index: int
    rle: dict[str, Any]
    png_key: str
    area_px: int
    bbox_xyxy_px: list[int] | None
    score: float | None


@dataclass(frozen=True)
class TurnData:
    id: str
    index: int
    question: str
    regions: list[dict[str, Any]]
    answer: str | None
    checkpoint_id: str | None
    routing: dict[str, Any] | None
    warnings: list[str]
    masks: list[MaskData]
    job_id: str | None
    job_status: str | None
    job_error: str | None


@dataclass(frozen=True)
class ImageData:
    id: str
    display_key: str
    width_px: int
    height_px: int
    filename: str | None
    source_format: str
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SessionData:
    id: str
    title: str
    owner_id: str
    image: ImageData
    regions: list[dict[str, Any]]
    turns: list[TurnData]
    # How the viewer reached it: their own, a read-only link, or an instructor's class view.
    read_only: bool = False
    can_fork: bool = False
    link_kind: str | None = None


def image_data(image: Any) -> ImageData:
    return ImageData(
        id=image.id,
        display_key=image.display_key,
        width_px=image.width_px,
        height_px=image.height_px,
        filename=image.filename,
        source_format=image.source_format,
        notes=list(image.notes or []),
    )


def turn_data(turn: Turn) -> TurnData:
    job: Job | None = turn.job
    return TurnData(
        id=turn.id,
        index=turn.index,
        question=turn.question,
        regions=list(turn.regions or []),
        answer=turn.answer,
        checkpoint_id=turn.checkpoint_id,
        routing=turn.routing,
        warnings=list(turn.warnings or []),
        masks=[
            MaskData(
                index=m.index,
                rle=dict(m.rle),
                png_key=m.png_key,
                area_px=m.area_px,
                bbox_xyxy_px=list(m.bbox_xyxy_px) if m.bbox_xyxy_px else None,
                score=m.score,
            )
            for m in turn.masks
        ],
        job_id=job.id if job is not None else None,
        job_status=job.status.value if job is not None else None,
        job_error=job.error if job is not None else None,
    )


def session_data(session: ChatSession, *, actor: Actor | None, **how: Any) -> SessionData:
    return SessionData(
        id=session.id,
        title=session.title,
        owner_id=session.owner_id,
        image=image_data(session.image),
        regions=list(session.regions or []),
        turns=[turn_data(t) for t in session.turns],
        **how,
    )


def read_session(
    db: Session, *, actor: Actor, session_id: str | None = None, token: str | None = None
) -> SessionData:
    """A session the actor may read: their own (or a class fork they teach), or via a link.

    A link is checked on every read, so a revoked or expired link stops working at once.
    """
    if token:
        link = resolve_link(db, token=token)
        session = open_shared_session(db, token=token)
        own = session.owner_id == actor.user_id
        return session_data(
            session,
            actor=actor,
            read_only=not own,
            can_fork=link.role is LinkRole.fork and not own,
            link_kind=link.kind.value,
        )
    session = get_session(db, actor=actor, session_id=session_id or "")
    return session_data(session, actor=actor, read_only=session.owner_id != actor.user_id)


def link_kind(db: Session, *, token: str) -> LinkKind:
    return resolve_link(db, token=token).kind
