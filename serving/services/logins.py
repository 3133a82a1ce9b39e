"""Logins that outlive a page: one row per browser login, its token held in a cookie.

The page logs in through a Gradio event, which cannot set cookies; it gets a one-time code
instead and trades it at the web app's cookie route (see `webapp.auth`) for the token,
which the route sets as an HTTP-only cookie. Codes and tokens are random; only their
sha256 is stored.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.models import LoginSession, utcnow
from serving.services.accounts import Actor, Identity, actor_for, identity_of, secret_digest
from serving.services.errors import InvalidInput, NotFound
from serving.services.sessions import log_in
from serving.services.validation import well_formed_secret

CODE_TTL = timedelta(seconds=120)
LOGIN_TTL = timedelta(days=30)


def _aware(moment: datetime) -> datetime:
    # SQLite returns naive datetimes; every stored time is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _live(row: LoginSession | None) -> bool:
    return row is not None and row.revoked_at is None and _aware(row.expires_at) > utcnow()


def _well_formed(secret: object) -> bool:
    return well_formed_secret(secret)


def issue_login_code(db: Session, *, actor: Actor) -> str:
    """A one-time code, valid for `CODE_TTL`, that the page trades for the login cookie."""
    if actor.anonymous:
        raise InvalidInput("Log in with an account first.")
    code = secrets.token_urlsafe(32)
    db.add(
        LoginSession(
            user_id=actor.user_id,
            token_sha256=secret_digest(code),
            redeemed=False,
            expires_at=utcnow() + CODE_TTL,
        )
    )
    db.flush()
    return code


def redeem_login_code(db: Session, *, code: str) -> str:
    """Trade a fresh code for the login token (the cookie's value); a code works once."""
    row = None
    if _well_formed(code):
        row = db.scalar(
            select(LoginSession)
            .where(LoginSession.token_sha256 == secret_digest(code))
            .with_for_update()
        )
    if row is None or row.redeemed or not _live(row):
        raise NotFound("That login code is not valid; log in again.")
    token = secrets.token_urlsafe(32)
    row.token_sha256 = secret_digest(token)
    row.redeemed = True
    row.expires_at = utcnow() + LOGIN_TTL
    db.flush()
    return token


def login_actor(db: Session, *, token: str | None) -> Actor | None:
    """The account a login cookie stands for, or None when it is unknown, ended or expired."""
    if not _well_formed(token):
        return None
    assert token is not None
    row = db.scalar(select(LoginSession).where(LoginSession.token_sha256 == secret_digest(token)))
    if row is None or not row.redeemed or not _live(row):
        return None
    try:
        actor = actor_for(db, user_id=row.user_id)
    except NotFound:
        return None
    return None if actor.anonymous else actor


@dataclass(frozen=True)
class PageLogin:
    identity: Identity
    moved: int  # sessions made anonymously in this browser, now the account's
    code: str  # the one-time code the page trades for its login cookie


def page_login(
    db: Session, *, username: str, password: str, anonymous_secret: str | None = None
) -> PageLogin | None:
    """A page's login: the password checked, this browser's anonymous sessions moved and a
    cookie code issued, all in one transaction; None for a wrong login."""
    done = log_in(db, username=username, password=password, anonymous_secret=anonymous_secret)
    if done is None:
        return None
    actor, moved = done
    return PageLogin(
        identity=identity_of(db, actor=actor),
        moved=moved,
        code=issue_login_code(db, actor=actor),
    )


def login_identity(db: Session, *, token: str | None) -> Identity | None:
    """`login_actor` with the account's name."""
    actor = login_actor(db, token=token)
    return None if actor is None else identity_of(db, actor=actor)


def end_login(db: Session, *, token: str | None) -> bool:
    """Log a cookie out for good (a copy of it stops working too); True if one was live."""
    if not _well_formed(token):
        return False
    assert token is not None
    row = db.scalar(select(LoginSession).where(LoginSession.token_sha256 == secret_digest(token)))
    if row is None or not row.redeemed or not _live(row):
        return False
    row.revoked_at = utcnow()
    return True
