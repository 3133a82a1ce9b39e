"""Sessions: a conversation on one image, its turns, answers and masks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from medplib.errors import UserInputError
from medplib.geometry import document_to_prompts
from serving.models import ChatSession, Image, LinkKind, Role, ShareLink, Turn, User, utcnow
from serving.services.accounts import Actor, anonymous_user_of, authenticate
from serving.services.errors import Forbidden, InvalidInput, NotFound
from serving.services.validation import safe_text, well_formed_id

MAX_TITLE_CHARS = 200
# One answer for a missing session and for someone else's: ids are never confirmed.
_NO_SESSION = "That session does not exist or was deleted."


@dataclass(frozen=True)
class SessionSummary:
    id: str
    title: str
    turns: int
    updated_at: datetime
    image_id: str


def summary_of(session: ChatSession) -> SessionSummary:
    return SessionSummary(
        id=session.id,
        title=session.title,
        turns=len(session.turns),
        updated_at=session.updated_at,
        image_id=session.image_id,
    )


def clean_title(title: str) -> str:
    # Titles are shown in lists: one line, no control characters, bounded length.
    if not isinstance(title, str):
        raise InvalidInput("The title must be text.")
    if len(title) > 10 * MAX_TITLE_CHARS:  # not worth cleaning
        raise InvalidInput(f"Titles are at most {MAX_TITLE_CHARS} characters.")
    # NULs, lone surrogates and other control characters are not printable: spaces.
    cleaned = " ".join("".join(ch if ch.isprintable() else " " for ch in title).split())
    if len(cleaned) > MAX_TITLE_CHARS:
        raise InvalidInput(f"Titles are at most {MAX_TITLE_CHARS} characters.")
    return cleaned


# What a stored region keeps: its kind, its geometry and the number it is shown with.
# Anything else a client sends along is dropped, so a region costs what its geometry does.
_REGION_GEOMETRY = {"point": "xy_px", "box": "xyxy_px", "mask": "rle"}
_RLE_KEYS = ("size", "counts")


def _stored_region(item: dict[str, Any]) -> dict[str, Any]:
    kind = item["kind"]
    key = _REGION_GEOMETRY[kind]
    value = item[key]
    if kind == "mask":
        value = {k: value[k] for k in _RLE_KEYS if k in value}
    else:
        value = list(value)  # numbers, as checked by `document_to_prompts`
    region: dict[str, Any] = {"kind": kind, key: value}
    label = item.get("label")
    if isinstance(label, int) and not isinstance(label, bool) and 0 < label < 10_000:
        region["label"] = label
    return region


def validate_regions(doc: Any, *, image: Image, max_regions: int) -> list[dict[str, Any]]:
    """Check a geometry document against the image; return it as stored (known keys only)."""
    if doc is None:
        return []
    if isinstance(doc, list) and len(doc) > max_regions:
        raise InvalidInput(f"At most {max_regions} regions per question; {len(doc)} were given.")
    try:
        document_to_prompts(doc, height_px=image.height_px, width_px=image.width_px)
    except UserInputError as exc:
        raise InvalidInput(str(exc)) from None
    return [_stored_region(item) for item in doc]


def create_session(
    db: Session,
    *,
    actor: Actor,
    image_id: str,
    title: str = "",
    regions: Any = None,
    max_regions: int = 16,
    filename: str | None = None,
) -> ChatSession:
    """A new session of the actor's on an image; ``filename`` is the name the actor uploaded
    the image under (the image row is shared by everyone who uploaded the same bytes, so
    its name is never taken from there)."""
    image = db.get(Image, image_id) if well_formed_id(image_id) else None
    if image is None:
        raise NotFound("That image does not exist; upload it again.")
    name = safe_text(filename, max_chars=255) or None
    session = ChatSession(
        owner_id=actor.user_id,
        image_id=image.id,
        title=clean_title(title) or clean_title((name or "")[:MAX_TITLE_CHARS]) or "Untitled",
        filename=name,
        regions=validate_regions(regions, image=image, max_regions=max_regions),
    )
    db.add(session)
    db.flush()
    return session


def can_read(db: Session, *, actor: Actor, session: ChatSession) -> bool:
    if actor.role is Role.admin or session.owner_id == actor.user_id:
        return True
    if session.via_link_id is not None:
        # An instructor sees every fork opened through a class link they created.
        link = db.get(ShareLink, session.via_link_id)
        return (
            link is not None and link.kind is LinkKind.klass and link.created_by_id == actor.user_id
        )
    return False


def load_session(db: Session, *, session_id: str) -> ChatSession:
    if not well_formed_id(session_id):
        raise NotFound(_NO_SESSION)
    session = db.scalar(
        select(ChatSession)
        .where(ChatSession.id == session_id)
        .options(selectinload(ChatSession.turns).selectinload(Turn.masks))
    )
    if session is None:
        raise NotFound(_NO_SESSION)
    return session


def get_session(db: Session, *, actor: Actor, session_id: str) -> ChatSession:
    session = load_session(db, session_id=session_id)
    if not can_read(db, actor=actor, session=session):
        # Same message as a missing session: ids of private sessions are not confirmed.
        raise NotFound(_NO_SESSION)
    return session


def get_own_session(db: Session, *, actor: Actor, session_id: str) -> ChatSession:
    session = load_session(db, session_id=session_id)
    if session.owner_id != actor.user_id:
        if can_read(db, actor=actor, session=session):
            raise Forbidden("This session is read-only for you; fork it to continue.")
        raise NotFound(_NO_SESSION)
    return session


def list_sessions(db: Session, *, actor: Actor, limit: int = 100) -> list[SessionSummary]:
    turns = (
        select(Turn.session_id, func.count(Turn.id).label("n")).group_by(Turn.session_id).subquery()
    )
    rows = db.execute(
        select(ChatSession, func.coalesce(turns.c.n, 0))
        .outerjoin(turns, turns.c.session_id == ChatSession.id)
        .where(ChatSession.owner_id == actor.user_id)
        .order_by(ChatSession.updated_at.desc())
        .limit(limit)
    ).all()
    return [
        SessionSummary(
            id=s.id, title=s.title, turns=int(n), updated_at=s.updated_at, image_id=s.image_id
        )
        for s, n in rows
    ]


def set_session_regions(
    db: Session, *, actor: Actor, session_id: str, regions: Any, max_regions: int
) -> list[dict[str, Any]]:
    """Replace the regions drawn on one of the actor's sessions (what a reopen restores).

    Same rules as `create_session`: owner only, geometry validated against the image.
    """
    session = get_own_session(db, actor=actor, session_id=session_id)
    session.regions = validate_regions(regions, image=session.image, max_regions=max_regions)
    session.updated_at = utcnow()
    return list(session.regions)


def adopt_sessions(db: Session, *, anonymous_secret: str | None, to_actor: Actor) -> int:
    """Give the sessions of the anonymous user behind ``anonymous_secret`` (the secret of
    the browser that is logging in) to the account; returns how many moved.

    Only the secret selects whose sessions move, never a name or id that others can see.
    What a visitor did before logging in follows them; an account's sessions never move.
    """
    if to_actor.anonymous:
        raise InvalidInput("Sessions move only to an account that logged in.")
    source = anonymous_user_of(db, browser_secret=anonymous_secret)
    if source is None or source.id == to_actor.user_id:
        return 0
    sessions = db.scalars(select(ChatSession).where(ChatSession.owner_id == source.id)).all()
    for session in sessions:
        session.owner_id = to_actor.user_id
    account = db.get(User, to_actor.user_id)
    if sessions and account is not None and source.last_session_id:
        account.last_session_id = source.last_session_id
    return len(sessions)


def log_in(
    db: Session, *, username: str, password: str, anonymous_secret: str | None = None
) -> tuple[Actor, int] | None:
    """Check a password; on success the sessions made anonymously by this browser (whose
    secret is ``anonymous_secret``) move along.

    Returns the account's actor and how many sessions moved, or None for a wrong login
    (which moves nothing).
    """
    actor = authenticate(db, username=username.strip(), password=password)
    if actor is None:
        return None
    moved = adopt_sessions(db, anonymous_secret=anonymous_secret, to_actor=actor)
    return actor, moved


def remember_session(db: Session, *, actor: Actor, session_id: str | None) -> None:
    """Note the session the actor has on screen, to reopen it on a reload.

    Only a session the actor may read is noted (a link-only view is not).
    """
    user = db.get(User, actor.user_id)
    if user is None or user.last_session_id == session_id:
        return
    if session_id is not None:
        try:
            get_session(db, actor=actor, session_id=session_id)
        except NotFound:
            return
    user.last_session_id = session_id


def last_session_id(db: Session, *, actor: Actor) -> str | None:
    """The session to reopen for the actor, if it still exists and is readable."""
    user = db.get(User, actor.user_id)
    if user is None or not user.last_session_id:
        return None
    try:
        return get_session(db, actor=actor, session_id=user.last_session_id).id
    except NotFound:
        return None


def rename_session(db: Session, *, actor: Actor, session_id: str, title: str) -> SessionSummary:
    session = get_own_session(db, actor=actor, session_id=session_id)
    session.title = clean_title(title)
    session.updated_at = utcnow()
    return summary_of(session)


def delete_session(db: Session, *, actor: Actor, session_id: str) -> None:
    """Owners delete their own sessions; admins any (turns, jobs, masks, links go with it)."""
    session = load_session(db, session_id=session_id)
    if session.owner_id != actor.user_id and actor.role is not Role.admin:
        if can_read(db, actor=actor, session=session):
            raise Forbidden("Only the owner or an admin can delete this session.")
        raise NotFound(_NO_SESSION)
    db.delete(session)
    db.flush()
