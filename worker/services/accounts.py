"""Users, roles and passwords.

Passwords are hashed with scrypt (stdlib), salted per user; verification is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.models import Role, User
from worker.services.errors import Forbidden, InvalidInput, NotFound

# scrypt cost: ~50 ms per hash on one core; slows guessing, fine for a login.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


@dataclass(frozen=True)
class Actor:
    """Who is asking: passed to every service that checks permissions."""

    user_id: str
    role: Role = Role.user
    anonymous: bool = False

    def has(self, *roles: Role) -> bool:
        return self.role is Role.admin or self.role in roles


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    _, n, r, p, salt_hex, digest_hex = stored.split("$")
    digest = hashlib.scrypt(
        password.encode(), salt=bytes.fromhex(salt_hex), n=int(n), r=int(r), p=int(p), dklen=32
    )
    return hmac.compare_digest(digest.hex(), digest_hex)


def create_user(db: Session, *, username: str, password: str | None, role: Role) -> User:
    username = username.strip()
    if not (1 <= len(username) <= 64) or not username.replace("-", "").replace("_", "").isalnum():
        raise InvalidInput("Usernames are 1-64 letters, digits, '-' or '_'.")
    if password is not None and len(password) < 8:
        raise InvalidInput("Passwords need at least 8 characters.")
    if db.scalar(select(User).where(User.username == username)) is not None:
        raise InvalidInput(f"The username {username!r} is taken.")
    user = User(
        username=username,
        password_hash=hash_password(password) if password else None,
        role=role,
    )
    db.add(user)
    db.flush()
    return user


def set_password(db: Session, *, user_id: str, password: str) -> None:
    user = db.get(User, user_id)
    if user is None:
        raise NotFound("No such user.")
    if len(password) < 8:
        raise InvalidInput("Passwords need at least 8 characters.")
    user.password_hash = hash_password(password)


def authenticate(db: Session, *, username: str, password: str) -> Actor | None:
    user = db.scalar(select(User).where(User.username == username, User.anonymous.is_(False)))
    if user is None:
        # Hash anyway so a missing user takes as long as a wrong password.
        verify_password(password, hash_password("x" * 8))
        return None
    if not verify_password(password, user.password_hash):
        return None
    return Actor(user_id=user.id, role=user.role)


def anonymous_actor(db: Session, *, browser_key: str) -> Actor:
    """The anonymous user for one browser (its key is a random id kept by the browser)."""
    if not (16 <= len(browser_key) <= 64) or not browser_key.isalnum():
        raise InvalidInput("The browser key must be 16-64 letters or digits.")
    username = f"anon-{browser_key}"
    user = db.scalar(select(User).where(User.username == username))
    if user is None:
        user = User(username=username, password_hash=None, role=Role.user, anonymous=True)
        db.add(user)
        db.flush()
    return Actor(user_id=user.id, role=Role.user, anonymous=True)


def actor_for(db: Session, *, user_id: str) -> Actor:
    user = db.get(User, user_id)
    if user is None:
        raise NotFound("No such user.")
    return Actor(user_id=user.id, role=user.role, anonymous=user.anonymous)


def require(actor: Actor, *roles: Role) -> None:
    if not actor.has(*roles):
        names = " or ".join(r.value for r in roles)
        raise Forbidden(f"This needs the {names} role; log in with such an account.")
