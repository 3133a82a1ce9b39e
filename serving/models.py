"""The platform's SQL record: every table, in one module, shared by the web app and workers.

Primary keys are random 128-bit hex strings so ids in links and task messages reveal
nothing and can be made before the row is written. Region prompts are JSON geometry in
original-image pixels; masks are COCO RLE plus a PNG in the artefact store.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Defined apart from the ORM so front ends can name them; also importable from here.
from serving.enums import (  # noqa: F401
    ArenaChoice,
    JobStatus,
    LinkKind,
    LinkRole,
    MaskVerdict,
    Role,
    Visibility,
)

# Stable constraint names so Alembic migrations are identical on PostgreSQL and SQLite.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as strings (no native ENUM type) so adding a value needs no type migration.
    return Enum(cls, native_enum=False, length=16, validate_strings=True)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    # scrypt hash; NULL for anonymous browser users, who cannot log in.
    password_hash: Mapped[str | None] = mapped_column(String(256))
    role: Mapped[Role] = mapped_column(_enum(Role), default=Role.user)
    anonymous: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # An anonymous user's credential is a random secret kept by its browser; only its sha256
    # is stored, and the username is random too, so what others see of a user never works
    # as a key.
    # (A unique index rather than a constraint: SQLite adds it without rebuilding the table.)
    browser_secret_sha256: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)
    # What other people see (an instructor's class overview); the username when unset.
    display_name: Mapped[str | None] = mapped_column(String(64))
    # The session this user last had on screen, reopened on a reload. No foreign key: a
    # deleted session just is not reopened (and users <-> sessions would be a cycle).
    last_session_id: Mapped[str | None] = mapped_column(String(32))
    # An anonymous user's client address when first seen, as `address_key` (a sha256, not the
    # address): new anonymous users per address and minute are limited by counting these.
    created_from: Mapped[str | None] = mapped_column(String(64), index=True)


class LoginSession(Base):
    """One login of an account in one browser; the browser holds the token in a cookie.

    Only the token's sha256 is stored. A row starts as a one-time code (valid briefly) that
    the page trades for the long-lived cookie token, so the token never reaches page script.
    """

    __tablename__ = "login_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    redeemed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class Image(Base):
    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    # Artefact-store keys: the uploaded bytes unchanged, and the 8-bit RGB PNG shown and modelled.
    original_key: Mapped[str] = mapped_column(String(128))
    display_key: Mapped[str] = mapped_column(String(128))
    source_format: Mapped[str] = mapped_column(String(16))
    modality: Mapped[str | None] = mapped_column(String(32))
    width_px: Mapped[int] = mapped_column(Integer)
    height_px: Mapped[int] = mapped_column(Integer)
    byte_size: Mapped[int] = mapped_column(Integer)
    # Unused since 0004: one row serves everyone who uploads the same bytes, so the name an
    # uploader gave the file belongs to their session (`ChatSession.filename`), not here.
    filename: Mapped[str | None] = mapped_column(String(255))
    notes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChatSession(Base):
    """A conversation about one image."""

    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_owner_updated", "owner_id", "updated_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="RESTRICT"), index=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    # The file name this session's owner uploaded the image under (never another uploader's).
    filename: Mapped[str | None] = mapped_column(String(255))
    visibility: Mapped[Visibility] = mapped_column(_enum(Visibility), default=Visibility.private)
    # Regions drawn before the first question (an instructor's prepared case), as geometry JSON.
    regions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    forked_from_id: Mapped[str | None] = mapped_column(
        ForeignKey("sessions.id", ondelete="SET NULL"), index=True
    )
    # The share link a fork was opened through (a class link groups a class's forks).
    via_link_id: Mapped[str | None] = mapped_column(
        ForeignKey("share_links.id", ondelete="SET NULL", use_alter=True), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    owner: Mapped[User] = relationship()
    image: Mapped[Image] = relationship()
    turns: Mapped[list[Turn]] = relationship(
        back_populates="session", order_by="Turn.index", cascade="all, delete-orphan"
    )


class Turn(Base):
    """One question and its answer; regions are geometry JSON in original pixels."""

    __tablename__ = "turns"
    __table_args__ = (UniqueConstraint("session_id", "index"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    question: Mapped[str] = mapped_column(Text)
    regions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    answer: Mapped[str | None] = mapped_column(Text)
    raw_answer: Mapped[str | None] = mapped_column(Text)
    checkpoint_id: Mapped[str | None] = mapped_column(String(128), index=True)
    routing: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    timings: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column()
    # Copied with its answer into a fork: such a turn was never run here and has no job.
    copied: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The answer a copy came from (the first one, through forks of forks): reviewers rate that
    # answer once, however many forks and class copies show it. None for answers run here.
    source_turn_id: Mapped[str | None] = mapped_column(
        ForeignKey("turns.id", ondelete="SET NULL"), index=True
    )

    session: Mapped[ChatSession] = relationship(back_populates="turns")
    job: Mapped[Job] = relationship(back_populates="turn", cascade="all, delete-orphan")
    masks: Mapped[list[Mask]] = relationship(
        back_populates="turn", order_by="Mask.index", cascade="all, delete-orphan"
    )


class Job(Base):
    """The execution record of one turn; the SQL row, not the broker, is the truth."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_queued", "status", "queued_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    turn_id: Mapped[str] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), unique=True)
    submitted_by_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus), default=JobStatus.queued)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Shown to the user as is: never a stack trace.
    error: Mapped[str | None] = mapped_column(Text)
    runner: Mapped[str] = mapped_column(String(16), default="embedded")
    worker_host: Mapped[str | None] = mapped_column(String(255))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    phase: Mapped[str | None] = mapped_column(String(32))
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    # Written every few seconds by the worker running the job; a running job whose
    # heartbeat is older than the time limit has lost its worker (see serving.reconcile).
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    # Seconds the model itself took, so platform overhead can be measured apart from it.
    model_seconds: Mapped[float | None] = mapped_column(Float)
    # The named checkpoint (`Settings.checkpoint_registry`) to run on, chosen when the job
    # was queued; NULL (jobs from before names) means the default checkpoint.
    checkpoint: Mapped[str | None] = mapped_column(String(64))

    turn: Mapped[Turn] = relationship(back_populates="job")


class Mask(Base):
    __tablename__ = "masks"
    __table_args__ = (UniqueConstraint("turn_id", "index"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    turn_id: Mapped[str] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    rle: Mapped[dict[str, Any]] = mapped_column(JSON)
    png_key: Mapped[str] = mapped_column(String(128))
    area_px: Mapped[int] = mapped_column(Integer)
    bbox_xyxy_px: Mapped[list[int] | None] = mapped_column(JSON)
    score: Mapped[float | None] = mapped_column(Float)
    # Dice between the masks decoded on the image and on its mirror, flipped back: how far the
    # answer survives a left-right flip. NULL where the checkpoint's mirror check is off, the
    # predictor does not report it, or the answer came before it was stored.
    mirror_agreement: Mapped[float | None] = mapped_column(Float)

    turn: Mapped[Turn] = relationship(back_populates="masks")
    # The model's mask above is version 0 and never changes; corrections are versions 1, 2, ...
    corrections: Mapped[list[MaskCorrection]] = relationship(
        back_populates="mask", order_by="MaskCorrection.version", cascade="all, delete-orphan"
    )


class MaskCorrection(Base):
    """A corrected version of a returned mask: kept beside the original, never overwritten."""

    __tablename__ = "mask_corrections"
    __table_args__ = (UniqueConstraint("mask_id", "version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    mask_id: Mapped[str] = mapped_column(ForeignKey("masks.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per mask
    author_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    rle: Mapped[dict[str, Any]] = mapped_column(JSON)  # COCO RLE at the image's original size
    png_key: Mapped[str] = mapped_column(String(128))
    area_px: Mapped[int] = mapped_column(Integer)
    bbox_xyxy_px: Mapped[list[int] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    mask: Mapped[Mask] = relationship(back_populates="corrections")
    author: Mapped[User | None] = relationship()


class ShareLink(Base):
    __tablename__ = "share_links"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    # Only a hash of the token is stored: a leaked database does not leak live links.
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    created_by_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[LinkRole] = mapped_column(_enum(LinkRole), default=LinkRole.view)
    kind: Mapped[LinkKind] = mapped_column(_enum(LinkKind), default=LinkKind.session)
    title: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()

    session: Mapped[ChatSession] = relationship(foreign_keys=[session_id])


class Rating(Base):
    __tablename__ = "ratings"
    __table_args__ = (UniqueConstraint("turn_id", "reviewer_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    turn_id: Mapped[str] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    reviewer_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    text_score: Mapped[int] = mapped_column(Integer)  # 1..5
    text_correct: Mapped[bool | None] = mapped_column(Boolean)
    # One verdict per mask of the turn, in mask order: "good" | "partly" | "wrong".
    mask_verdicts: Mapped[list[str]] = mapped_column(JSON, default=list)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    turn: Mapped[Turn] = relationship()
    reviewer: Mapped[User] = relationship()


class AdminChoice(Base):
    """A choice an admin made among what the settings offer (e.g. the default checkpoint).

    Settings list what exists; these rows record what is picked, so a choice survives
    restarts and is the same for every web process.
    """

    __tablename__ = "admin_choices"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ArenaMatch(Base):
    """One question on one image answered blind by two checkpoints, shown as A and B.

    Each side is an ordinary turn and job in a session of its own (owned by the arena's
    system user, so no player can open it and read the checkpoint's name early).
    """

    __tablename__ = "arena_matches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    # The player the match was shown to: the only one who may vote on it.
    started_by_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="RESTRICT"), index=True)
    question: Mapped[str] = mapped_column(Text)
    regions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Checkpoint names in the order shown, drawn at random per match.
    checkpoint_a: Mapped[str] = mapped_column(String(64))
    checkpoint_b: Mapped[str] = mapped_column(String(64))
    turn_a_id: Mapped[str] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    turn_b_id: Mapped[str] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    turn_a: Mapped[Turn] = relationship(foreign_keys=[turn_a_id])
    turn_b: Mapped[Turn] = relationship(foreign_keys=[turn_b_id])
    image: Mapped[Image] = relationship()


class ArenaVote(Base):
    __tablename__ = "arena_votes"
    __table_args__ = (UniqueConstraint("match_id", "voter_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    match_id: Mapped[str] = mapped_column(
        ForeignKey("arena_matches.id", ondelete="CASCADE"), index=True
    )
    voter_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    choice: Mapped[ArenaChoice] = mapped_column(_enum(ArenaChoice))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    match: Mapped[ArenaMatch] = relationship()
