"""Alembic environment over the platform's metadata (`serving.models`).

The database URL comes from the ``sqlalchemy.url`` option when the caller sets it
(`medplib db`, tests), else from the validated settings.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from serving.db import make_engine
from serving.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from serving.settings import load_settings_or_exit

    return load_settings_or_exit().database_url


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _sqlite_foreign_keys(connection: Connection, on: bool) -> None:
    # On the driver connection, outside any transaction: inside one SQLite ignores the pragma.
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
        if on:
            broken = cursor.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"The migration left broken foreign keys: {broken[:5]}")
    finally:
        cursor.close()


def run_online() -> None:
    engine = make_engine(_url())
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch mode rebuilds a table (copy, drop, rename); with foreign keys on, dropping
            # the old table would cascade into the rows that reference it. Off for the run,
            # as SQLite's guide to schema changes says, then checked.
            _sqlite_foreign_keys(connection, on=False)
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite cannot ALTER constraints; batch mode rebuilds the table instead.
            render_as_batch=sqlite,
        )
        with context.begin_transaction():
            context.run_migrations()
        if sqlite:
            _sqlite_foreign_keys(connection, on=True)
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
