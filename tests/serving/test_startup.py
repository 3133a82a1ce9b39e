"""`medplib serve` and the database: SQLite migrates itself, PostgreSQL behind head stops."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect

from serving.migrate import (
    SchemaBehind,
    alembic_config,
    current_revision,
    head_revision,
    prepare_database,
)
from serving.settings import Settings
from tests.processes import ROOT


def test_an_empty_sqlite_path_is_migrated_to_head(tmp_path):
    url = f"sqlite:///{tmp_path / 'new' / 'medplib.db'}"
    assert current_revision(url) is None
    prepare_database(Settings(database_url=url))
    assert current_revision(url) == head_revision()
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"users", "sessions", "turns", "jobs"} <= tables
    prepare_database(Settings(database_url=url))  # idempotent
    assert current_revision(url) == head_revision()


def test_postgres_behind_head_is_refused_not_migrated(postgres_url):
    settings = Settings(database_url=postgres_url)
    with pytest.raises(SchemaBehind, match=r"has no tables, not \w+; run `medplib db upgrade`"):
        prepare_database(settings)
    assert current_revision(postgres_url) is None  # nothing was created
    command.upgrade(alembic_config(postgres_url), "0001")
    with pytest.raises(SchemaBehind, match="is at revision 0001"):
        prepare_database(settings)
    command.upgrade(alembic_config(postgres_url), "head")
    prepare_database(settings)


def test_serve_on_unmigrated_postgres_exits_2_with_one_line(postgres_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDPLIB_")}
    env["MEDPLIB_DATABASE_URL"] = postgres_url
    proc = subprocess.run(
        [sys.executable, "-m", "medplib.cli", "serve", "--port", "7999"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("medplib: the database postgresql")
    assert line.endswith(
        "has no tables, not " + head_revision() + "; run `medplib db upgrade` first"
    )
    assert "Traceback" not in proc.stderr
