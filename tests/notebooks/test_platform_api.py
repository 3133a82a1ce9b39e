from __future__ import annotations

import os
import sys

import pytest

from tests.notebooks.runner import execute
from tests.webapp.conftest import free_port, migrate
from tests.webapp.serving import running_server, server_env


@pytest.mark.slow
def test_platform_api_notebook_drives_a_running_server(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'medplib.db'}"
    migrate(url)
    port = free_port()
    env = server_env(
        tmp_path, MEDPLIB_DATABASE_URL=url, MEDPLIB_ARTEFACT_DIR=str(tmp_path / "artefacts")
    )
    base = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "medplib.cli", "serve", "--port", str(port)]
    with running_server(cmd, env, base):
        monkeypatch.setenv("MEDPLIB_API_URL", base)
        nb = execute("platform_api.ipynb")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "succeeded | noop answer to: What is in <region>?" in text  # "region 1" became the tag
    assert "mask 0 (200, 300) 8000 [100, 60, 200, 140]" in text
    assert "read only: True | turns: 1" in text
    assert "fork refused:" in text
    assert "fork: True | read only: False" in text
    assert os.environ.get("MEDPLIB_API_URL") == base
