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

from serving.models import Role, User
from serving.services.errors import Forbidden, InvalidInput, NotFound

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


def secret_digest(secret: str) -> str:
    """How a browser secret or login token is stored: its sha256 (they carry >= 128 random
    bits, so a fast hash is enough and lookups can be by the digest)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def valid_browser_secret(secret: object) -> bool:
    return (
        isinstance(secret, str)
        and 16 <= len(secret) <= 128
        and secret.replace("-", "").replace("_", "").isalnum()
    )


def new_browser_secret() -> str:
    """A fresh anonymous credential for a client that keeps none (API clients)."""
    return secrets.token_hex(16)


def anonymous_actor(db: Session, *, browser_secret: str) -> Actor:
    """The anonymous user of one browser, created on first sight of its secret.

    The secret is the only way to act as this user; it is stored hashed, and the user's
    username and display name are random, so nothing shown to others can stand in for it.
    """
    if not valid_browser_secret(browser_secret):
        raise InvalidInput("The browser key must be 16-128 letters, digits, '-' or '_'.")
    digest = secret_digest(browser_secret)
    user = db.scalar(select(User).where(User.browser_secret_sha256 == digest))
    if user is None:
        username = f"anon-{secrets.token_hex(8)}"
        user = User(
            username=username,
            password_hash=None,
            role=Role.user,
            anonymous=True,
            browser_secret_sha256=digest,
            display_name=f"Anonymous {username[-6:]}",
        )
        db.add(user)
        db.flush()
    return Actor(user_id=user.id, role=Role.user, anonymous=True)


def anonymous_user_of(db: Session, *, browser_secret: str | None) -> User | None:
    """The anonymous user a browser secret belongs to, if any (never creates one)."""
    if not valid_browser_secret(browser_secret):
        return None
    assert browser_secret is not None
    return db.scalar(
        select(User).where(
            User.browser_secret_sha256 == secret_digest(browser_secret), User.anonymous.is_(True)
        )
    )


def display_name(user: User | None) -> str:
    """The name other people see for a user (instructors, reviewers)."""
    if user is None:
        return "?"
    return user.display_name or user.username


def actor_for(db: Session, *, user_id: str) -> Actor:
    user = db.get(User, user_id)
    if user is None:
        raise NotFound("No such user.")
    return Actor(user_id=user.id, role=user.role, anonymous=user.anonymous)


def require(actor: Actor, *roles: Role) -> None:
    if not actor.has(*roles):
        names = " or ".join(r.value for r in roles)
        raise Forbidden(f"This needs the {names} role; log in with such an account.")
