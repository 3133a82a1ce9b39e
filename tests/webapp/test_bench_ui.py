"""`medplib bench ui`: the client round trip and the streamed first text, measured."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.processes import ROOT
from webapp.bench.ui import run_mode


def test_embedded_round_trip_and_first_text_are_measured_for_every_question():
    result = run_mode("embedded", questions=3, model_s=0.3, broker_url="", postgres_url="unused")
    assert result["mode"] == "embedded" and result["streamed"] == "3/3"
    overhead, first = result["overhead"], result["first_text_after_emit"]
    assert overhead["n"] == 3 and first["n"] == 3
    # The answer cannot come back before the stand-in model has spent its 0.3 s ...
    assert overhead["p50_ms"] > 0
    # ... and its first word reaches the notices after it was emitted, well within the answer.
    assert 0 <= first["p50_ms"] < 300


@pytest.mark.integration
def test_the_command_prints_json_for_both_modes(redis_url, postgres_url):
    from sqlalchemy.engine import make_url

    admin = make_url(postgres_url).set(database="test").render_as_string(hide_password=False)
    done = subprocess.run(
        [
            sys.executable, "-m", "medplib.cli", "bench", "ui", "--questions", "2",
            "--model-seconds", "0.1", "--broker-url", redis_url, "--postgres-url", admin, "--json",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert report["benchmark"] == "ui" and report["model_seconds"] == 0.1
    assert [r["mode"] for r in report["results"]] == ["embedded", "distributed"]
    assert all(r["streamed"] == "2/2" and r["overhead"]["n"] == 2 for r in report["results"])
