"""Read models: plain, frozen copies of what a caller sees, taken inside one transaction.

Services return these, never ORM rows: a row does not outlive its transaction (its lazy
relations fail later), and a front end that held rows could read fields no check covered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from medplib.answer_text import answer_with_mask_marks
from serving.enums import LinkKind, LinkRole
from serving.models import ChatSession, Image, ShareLink, Turn


@dataclass(frozen=True)
class MaskData:
    index: int
    rle: dict[str, Any]
    png_key: str
    area_px: int
    bbox_xyxy_px: list[int] | None
    score: float | None
    mirror_agreement: float | None = None


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
    answered_at: datetime | None = None
    raw_answer: str | None = None  # as decoded, <SEG> tokens kept (None: not stored)

    @property
    def answer_with_marks(self) -> str | None:
        """The answer as pages show it: "[mask k]" where the k-th mask was produced."""
        return None if self.answer is None else answer_with_mask_marks(self.answer, self.raw_answer)


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


@dataclass(frozen=True)
class LinkData:
    """A share link as its creator sees it (never its token, which is shown once)."""

    id: str
    role: LinkRole
    kind: LinkKind
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


def image_data(image: Image, filename: str | None = None) -> ImageData:
    """An image as one viewer sees it. The row is shared by everyone who uploaded the same
    bytes, so the file name is the viewer's session's (or upload's), never the row's."""
    return ImageData(
        id=image.id,
        display_key=image.display_key,
        width_px=image.width_px,
        height_px=image.height_px,
        filename=filename,
        source_format=image.source_format,
        notes=list(image.notes or []),
    )


def turn_data(turn: Turn) -> TurnData:
    job = turn.job
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
                mirror_agreement=m.mirror_agreement,
            )
            for m in turn.masks
        ],
        job_id=job.id if job is not None else None,
        job_status=job.status.value if job is not None else None,
        job_error=job.error if job is not None else None,
        answered_at=turn.answered_at,
        raw_answer=turn.raw_answer,
    )


def session_data(session: ChatSession, **how: Any) -> SessionData:
    return SessionData(
        id=session.id,
        title=session.title,
        owner_id=session.owner_id,
        image=image_data(session.image, session.filename),
        regions=list(session.regions or []),
        turns=[turn_data(t) for t in session.turns],
        **how,
    )


def link_data(link: ShareLink) -> LinkData:
    return LinkData(
        id=link.id,
        role=link.role,
        kind=link.kind,
        created_at=link.created_at,
        expires_at=link.expires_at,
        revoked_at=link.revoked_at,
    )
