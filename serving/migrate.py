"""The platform's database schema: the Alembic configuration and the start-up check.

Embedded mode (SQLite) migrates itself when the server starts, so one command runs the demo.
On PostgreSQL, migrations are a deployment step (`medplib db upgrade`, the compose `migrate`
service): a server that finds its database behind stops instead of altering a shared schema.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving.settings import Settings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest revision in `migrations/`."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "migrations/ holds no revision"
    return head


def current_revision(database_url: str) -> str | None:
    """The revision the database is at; None for a database without the platform's tables."""
    from alembic.runtime.migration import MigrationContext

    from serving.db import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


class SchemaBehind(Exception):
    """The database is not at the head revision and this process may not migrate it."""


def prepare_database(settings: Settings) -> None:
    """Bring an embedded (SQLite) database to head; check that any other one is there already.

    Raises :class:`SchemaBehind` with one line for the user.
    """
    from alembic import command
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        command.upgrade(alembic_config(settings.database_url), "head")
        if settings.admin_password:
            ensure_admin(settings)
        return
    head, current = head_revision(), current_revision(settings.database_url)
    if current != head:
        where = url.render_as_string(hide_password=True)
        state = "has no tables" if current is None else f"is at revision {current}"
        raise SchemaBehind(
            f"the database {where} {state}, not {head}; run `medplib db upgrade` first"
        )


def prepare_database_or_exit(settings: Settings) -> None:
    """:func:`prepare_database`, or one line on stderr and exit status 2."""
    try:
        prepare_database(settings)
    except SchemaBehind as exc:
        print(f"medplib: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def ensure_admin(settings: Settings) -> None:
    """The `admin` account with the password in ``MEDPLIB_ADMIN_PASSWORD`` (made or reset)."""
    from sqlalchemy import select

    from serving.db import session_factory, transaction
    from serving.models import Role, User
    from serving.services.accounts import create_user, hash_password

    with transaction(session_factory(settings.database_url)) as db:
        admin = db.scalar(select(User).where(User.username == "admin"))
        if admin is None:
            create_user(db, username="admin", password=settings.admin_password, role=Role.admin)
        else:
            admin.password_hash = hash_password(settings.admin_password)
            admin.role = Role.admin
