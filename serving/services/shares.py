"""Share links, forks and class links.

A token is 32 random bytes from :mod:`secrets` (256 bits), shown once; only its sha256
is stored. Lookup is by the hash, then the stored hash is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.models import (
    ChatSession,
    LinkKind,
    LinkRole,
    Mask,
    Role,
    ShareLink,
    Turn,
    User,
    utcnow,
)
from serving.services.accounts import Actor, display_name, require
from serving.services.errors import Forbidden, InvalidInput, NotFound
from serving.services.sessions import SessionSummary, get_own_session, load_session, summary_of
from serving.services.validation import finite_number, well_formed_id, well_formed_secret
from serving.views import LinkData, TurnData, link_data, turn_data

TOKEN_BYTES = 32
_BAD_LINK = "This link is not valid; ask its owner for a new one."
# The longest expiry a link may be given (about ten years); "never" is no expiry at all.
MAX_EXPIRY_HOURS = 24 * 366 * 10


def expiry_from_hours(hours: object) -> timedelta | None:
    """A link's lifetime from a number of hours; None (no number) means no expiry.

    Zero, negative, NaN, infinite and absurdly long lifetimes are refused in words, never
    read as "never expires".
    """
    if hours is None:
        return None
    value = finite_number(hours, what="expiry (in hours)")
    if value <= 0:
        raise InvalidInput(
            "The expiry must be a positive number of hours; leave it empty for a link that "
            "does not expire."
        )
    if value > MAX_EXPIRY_HOURS:
        raise InvalidInput(
            f"The expiry can be at most {MAX_EXPIRY_HOURS:,} hours (ten years); leave it "
            "empty for a link that does not expire."
        )
    return timedelta(hours=value)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _aware(moment: datetime) -> datetime:
    # SQLite returns naive datetimes; every stored time is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def create_share_link(
    db: Session,
    *,
    actor: Actor,
    session_id: str,
    role: LinkRole = LinkRole.view,
    kind: LinkKind = LinkKind.session,
    expires_in: timedelta | None = None,
    title: str = "",
) -> tuple[ShareLink, str]:
    """Make a link to one of the actor's sessions; returns the row and the raw token."""
    session = get_own_session(db, actor=actor, session_id=session_id)
    if kind is LinkKind.klass:
        require(actor, Role.instructor)
        role = LinkRole.fork  # every student works in their own copy
    if actor.anonymous and expires_in is None:
        expires_in = timedelta(days=7)  # anonymous links do not live for ever
    if expires_in is not None and expires_in <= timedelta(0):
        raise InvalidInput("The expiry must be in the future.")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    link = ShareLink(
        token_sha256=_digest(token),
        session_id=session.id,
        created_by_id=actor.user_id,
        role=role,
        kind=kind,
        title=(title or session.title)[:200],
        expires_at=None if expires_in is None else utcnow() + expires_in,
    )
    db.add(link)
    db.flush()
    return link, token


@dataclass(frozen=True)
class NewLink:
    link: LinkData
    token: str  # shown this once: only its hash is stored


def share_session(
    db: Session,
    *,
    actor: Actor,
    session_id: str,
    role: LinkRole = LinkRole.view,
    kind: LinkKind = LinkKind.session,
    expires_in: timedelta | None = None,
) -> NewLink:
    """`create_share_link`, as its creator sees the new link."""
    link, token = create_share_link(
        db, actor=actor, session_id=session_id, role=role, kind=kind, expires_in=expires_in
    )
    return NewLink(link=link_data(link), token=token)


def resolve_link(db: Session, *, token: str) -> ShareLink:
    if not well_formed_secret(token):
        raise NotFound(_BAD_LINK)
    digest = _digest(token)
    link = db.scalar(select(ShareLink).where(ShareLink.token_sha256 == digest))
    if link is None or not hmac.compare_digest(link.token_sha256, digest):
        raise NotFound(_BAD_LINK)
    if link.revoked_at is not None:
        raise InvalidInput("This link was revoked by its owner.")
    if link.expires_at is not None and _aware(link.expires_at) <= utcnow():
        raise InvalidInput(
            f"This link expired on {_aware(link.expires_at):%Y-%m-%d %H:%M} UTC; "
            "ask its owner for a new one."
        )
    return link


def open_shared_session(db: Session, *, token: str) -> ChatSession:
    """The session behind a live link, for a read-only view."""
    return load_session(db, session_id=resolve_link(db, token=token).session_id)


def fork_session(db: Session, *, actor: Actor, token: str) -> SessionSummary:
    """Copy a shared session (image, regions, answered turns, masks) into the actor's own."""
    return summary_of(_fork(db, actor=actor, token=token))


def _fork(db: Session, *, actor: Actor, token: str) -> ChatSession:
    link = resolve_link(db, token=token)
    if link.role is not LinkRole.fork:
        raise Forbidden("This link is view-only; its owner has not allowed copies.")
    source = load_session(db, session_id=link.session_id)
    if link.kind is LinkKind.klass:
        # One fork per student per class link: reopening the link returns the same copy.
        existing = db.scalar(
            select(ChatSession).where(
                ChatSession.owner_id == actor.user_id, ChatSession.via_link_id == link.id
            )
        )
        if existing is not None:
            return existing
    fork = ChatSession(
        owner_id=actor.user_id,
        image_id=source.image_id,
        title=f"{source.title} (copy)"[:200] if link.kind is LinkKind.session else source.title,
        regions=list(source.regions or []),
        filename=source.filename,
        forked_from_id=source.id,
        via_link_id=link.id,
    )
    db.add(fork)
    db.flush()
    for turn in source.turns:
        if turn.answer is None:
            continue  # unanswered or failed questions are not copied
        copy = Turn(
            session_id=fork.id,
            index=len(fork.turns),
            question=turn.question,
            regions=list(turn.regions or []),
            answer=turn.answer,
            raw_answer=turn.raw_answer,
            checkpoint_id=turn.checkpoint_id,
            routing=turn.routing,
            timings=turn.timings,
            warnings=list(turn.warnings or []),
            answered_at=turn.answered_at,
            copied=True,
            source_turn_id=turn.source_turn_id or turn.id,
        )
        fork.turns.append(copy)
        db.flush()
        for mask in turn.masks:
            db.add(
                Mask(
                    turn_id=copy.id,
                    index=mask.index,
                    rle=mask.rle,
                    png_key=mask.png_key,
                    area_px=mask.area_px,
                    bbox_xyxy_px=mask.bbox_xyxy_px,
                    score=mask.score,
                    mirror_agreement=mask.mirror_agreement,
                )
            )
    db.flush()
    return fork


def revoke_link(db: Session, *, actor: Actor, link_id: str) -> LinkData:
    link = db.get(ShareLink, link_id) if well_formed_id(link_id) else None
    # Someone else's link gets the answer a missing one gets: link ids are not confirmed.
    if link is None or (link.created_by_id != actor.user_id and actor.role is not Role.admin):
        raise NotFound("That link does not exist.")
    if link.revoked_at is None:
        link.revoked_at = utcnow()
    return link_data(link)


def list_links(db: Session, *, actor: Actor, session_id: str) -> list[LinkData]:
    session = get_own_session(db, actor=actor, session_id=session_id)
    links = db.scalars(
        select(ShareLink)
        .where(ShareLink.session_id == session.id)
        .order_by(ShareLink.created_at.desc())
    )
    return [link_data(link) for link in links]


@dataclass(frozen=True)
class ClassFork:
    """One student's copy of a class case, as its instructor sees it."""

    id: str
    owner_id: str
    student: str  # the name shown for the student, never their browser's secret
    answers: int
    last: TurnData | None  # the newest answered turn


def _class_fork(db: Session, fork: ChatSession) -> ClassFork:
    answered = [t for t in fork.turns if t.answer is not None]
    return ClassFork(
        id=fork.id,
        owner_id=fork.owner_id,
        student=display_name(db.get(User, fork.owner_id)),
        answers=len(answered),
        last=turn_data(answered[-1]) if answered else None,
    )


def class_forks(db: Session, *, actor: Actor, link_id: str) -> list[ClassFork]:
    """Every student's fork of a class link, for its instructor (or an admin)."""
    link = db.get(ShareLink, link_id) if well_formed_id(link_id) else None
    if (
        link is None
        or link.kind is not LinkKind.klass
        or (link.created_by_id != actor.user_id and actor.role is not Role.admin)
    ):
        raise NotFound("That class link does not exist.")
    forks = db.scalars(
        select(ChatSession)
        .where(ChatSession.via_link_id == link.id)
        .order_by(ChatSession.created_at)
    )
    return [_class_fork(db, fork) for fork in forks]
