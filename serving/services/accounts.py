"""Users, roles and passwords.

Passwords are hashed with scrypt (stdlib), salted per user; verification is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from serving.models import Role, User, utcnow
from serving.services.errors import Forbidden, InvalidInput, NotFound, RateLimited
from serving.services.validation import check_text, text_problem

# scrypt cost: ~50 ms per hash on one core; slows guessing, fine for a login.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
MAX_USERNAME_CHARS = 64
MAX_PASSWORD_CHARS = 1024


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


def _check_password(password: str) -> None:
    check_text(password, what="password", max_chars=MAX_PASSWORD_CHARS)
    if len(password) < 8:
        raise InvalidInput("Passwords need at least 8 characters.")


def create_user(db: Session, *, username: str, password: str | None, role: Role) -> User:
    username = check_text(username, what="username", max_chars=200).strip()
    if (
        not (1 <= len(username) <= MAX_USERNAME_CHARS)
        or not username.replace("-", "").replace("_", "").isalnum()
    ):
        raise InvalidInput("Usernames are 1-64 letters, digits, '-' or '_'.")
    if password is not None:
        _check_password(password)
    taken = InvalidInput(f"The username {username!r} is taken.")
    if db.scalar(select(User).where(User.username == username)) is not None:
        raise taken
    user = User(
        username=username,
        password_hash=hash_password(password) if password else None,
        role=role,
    )
    try:
        # A savepoint: a concurrent create of the same name loses with a sentence, not SQL.
        with db.begin_nested():
            db.add(user)
    except IntegrityError:
        raise taken from None
    return user


def set_password(db: Session, *, user_id: str, password: str) -> None:
    user = db.get(User, user_id)
    if user is None:
        raise NotFound("No such user.")
    _check_password(password)
    user.password_hash = hash_password(password)


def authenticate(db: Session, *, username: str, password: str) -> Actor | None:
    if not all(
        isinstance(value, str) and len(value) <= limit and text_problem(value) is None
        for value, limit in ((username, MAX_USERNAME_CHARS), (password, MAX_PASSWORD_CHARS))
    ):
        return None  # no account has such a name or password: a wrong login, said as such
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


def address_key(address: str | None) -> str | None:
    """What a client address is counted under: the sha256 of the address (of its /64 for
    IPv6, which one client usually holds whole), so the table lists no addresses."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        text = str(mapped) if mapped else str(ipaddress.ip_network(f"{ip}/64", strict=False))
    else:
        text = str(ip)
    return hashlib.sha256(text.encode()).hexdigest()


def anonymous_actor(
    db: Session,
    *,
    browser_secret: str,
    address: str | None = None,
    new_per_address_per_minute: int | None = None,
) -> Actor:
    """The anonymous user of one browser, created on first sight of its secret.

    The secret is the only way to act as this user; it is stored hashed, and the user's
    username and display name are random, so nothing shown to others can stand in for it.
    A new user counts against its client ``address``: beyond ``new_per_address_per_minute``
    new anonymous users from one address in a minute, the next is refused (existing ones
    are never affected).
    """
    if not valid_browser_secret(browser_secret):
        raise InvalidInput("The browser key must be 16-128 letters, digits, '-' or '_'.")
    digest = secret_digest(browser_secret)
    user = db.scalar(select(User).where(User.browser_secret_sha256 == digest))
    if user is None:
        key = address_key(address)
        if key is not None and new_per_address_per_minute is not None:
            recent = db.scalar(
                select(func.count(User.id)).where(
                    User.anonymous.is_(True),
                    User.created_from == key,
                    User.created_at >= utcnow() - timedelta(minutes=1),
                )
            )
            if (recent or 0) >= new_per_address_per_minute:
                raise RateLimited(
                    "Too many new visitors from your network address in the last minute; "
                    "wait a minute, then reload the page."
                )
        username = f"anon-{secrets.token_hex(8)}"
        user = User(
            username=username,
            password_hash=None,
            role=Role.user,
            anonymous=True,
            browser_secret_sha256=digest,
            display_name=f"Anonymous {username[-6:]}",
            created_from=key,
        )
        try:
            # Two first page-loads of one browser race to create its user: on PostgreSQL the
            # second insert waits for the first, fails on the unique secret, and reads the
            # winner instead (a savepoint keeps the transaction usable).
            with db.begin_nested():
                db.add(user)
        except IntegrityError:
            winner = db.scalar(select(User).where(User.browser_secret_sha256 == digest))
            if winner is None:
                raise
            user = winner
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


@dataclass(frozen=True)
class Identity:
    """An actor with the name shown for them (a page's "logged in as")."""

    actor: Actor
    name: str


def identity_of(db: Session, *, actor: Actor) -> Identity:
    return Identity(actor=actor, name=display_name(db.get(User, actor.user_id)))


def anonymous_identity(
    db: Session,
    *,
    browser_secret: str,
    address: str | None = None,
    new_per_address_per_minute: int | None = None,
) -> Identity:
    """`anonymous_actor` with its name, in the same transaction."""
    actor = anonymous_actor(
        db,
        browser_secret=browser_secret,
        address=address,
        new_per_address_per_minute=new_per_address_per_minute,
    )
    return identity_of(db, actor=actor)


def actor_for(db: Session, *, user_id: str) -> Actor:
    user = db.get(User, user_id)
    if user is None:
        raise NotFound("No such user.")
    return Actor(user_id=user.id, role=user.role, anonymous=user.anonymous)


def require(actor: Actor, *roles: Role) -> None:
    if not actor.has(*roles):
        names = " or ".join(r.value for r in roles)
        raise Forbidden(f"This needs the {names} role; log in with such an account.")
