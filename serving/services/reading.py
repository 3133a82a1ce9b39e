"""Reading a session as one viewer sees it: their own, a class copy they teach, or a link's."""

from __future__ import annotations

from sqlalchemy.orm import Session

from serving.enums import LinkKind, LinkRole
from serving.services.accounts import Actor
from serving.services.sessions import get_session
from serving.services.shares import open_shared_session, resolve_link
from serving.views import SessionData, session_data


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
            read_only=not own,
            can_fork=link.role is LinkRole.fork and not own,
            link_kind=link.kind.value,
        )
    session = get_session(db, actor=actor, session_id=session_id or "")
    return session_data(session, read_only=session.owner_id != actor.user_id)


def link_kind(db: Session, *, token: str) -> LinkKind:
    return resolve_link(db, token=token).kind
