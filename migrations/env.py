"""Alembic environment over the platform's metadata (`serving.models`).

The database URL comes from the ``sqlalchemy.url`` option when the caller sets it
(`medplib db`, tests), else from the validated settings.
"""

from __future__ import annotations

from alembic import context

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


def run_online() -> None:
    engine = make_engine(_url())
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite cannot ALTER constraints; batch mode rebuilds the table instead.
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
