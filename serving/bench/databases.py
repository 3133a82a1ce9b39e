"""Throw-away PostgreSQL databases for benchmarks that run the distributed stack."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from serving.db import engine_for


@contextmanager
def scratch_postgres(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``admin_url``; its URL, dropped afterwards."""
    name = f"medplib_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        # Engines cached for a database that is gone would only hold dead connections.
        engine_for.cache_clear()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
