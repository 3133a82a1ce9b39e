"""`medplib serve` and the Spaces entry point, as real processes answering HTTP."""

from __future__ import annotations

import sys

import pytest

from tests.webapp.conftest import free_port, migrate
from tests.webapp.serving import ROOT, running_server
from tests.webapp.serving import server_env as _env


def _run(args: list[str], env: dict[str, str], url: str) -> bytes:
    with running_server(args, env, url) as page:
        return page


@pytest.mark.slow
def test_medplib_serve_answers_200(tmp_path):
    url = f"sqlite:///{tmp_path / 'medplib.db'}"
    migrate(url)
    port = free_port()
    env = _env(tmp_path, MEDPLIB_DATABASE_URL=url, MEDPLIB_ARTEFACT_DIR=str(tmp_path / "artefacts"))
    body = _run(
        [sys.executable, "-m", "medplib.cli", "serve", "--port", str(port)],
        env,
        f"http://127.0.0.1:{port}/",
    )
    assert b"MedPLIB" in body


@pytest.mark.slow
def test_spaces_app_migrates_then_serves(tmp_path):
    port = free_port()
    env = _env(
        tmp_path,
        MEDPLIB_DATABASE_URL=f"sqlite:///{tmp_path / 'fresh.db'}",
        MEDPLIB_ARTEFACT_DIR=str(tmp_path / "artefacts"),
        MEDPLIB_HOST="127.0.0.1",
        MEDPLIB_PORT=str(port),
    )
    body = _run([sys.executable, "app.py"], env, f"http://127.0.0.1:{port}/")
    assert b"MedPLIB" in body
    assert (tmp_path / "fresh.db").exists()  # created by the migrations, not by hand


def test_persistent_storage_defaults_only_fill_unset_variables(tmp_path):
    sys.path.insert(0, str(ROOT))
    try:
        from app import persistent_defaults
    finally:
        sys.path.remove(str(ROOT))
    assert persistent_defaults(tmp_path / "missing", env={}) == {}
    defaults = persistent_defaults(tmp_path, env={})
    assert defaults == {
        "MEDPLIB_DATABASE_URL": f"sqlite:///{tmp_path / 'medplib.db'}",
        "MEDPLIB_ARTEFACT_DIR": str(tmp_path / "artefacts"),
    }
    kept = persistent_defaults(tmp_path, env={"MEDPLIB_DATABASE_URL": "postgresql://db/x"})
    assert list(kept) == ["MEDPLIB_ARTEFACT_DIR"]
