"""Run `medplib serve` (or app.py) as a real process for the duration of a test."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def server_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDPLIB_")}
    env.update({"MEDPLIB_PREDICTOR": "noop", "GRADIO_ANALYTICS_ENABLED": "False", **extra})
    env["GRADIO_TEMP_DIR"] = str(tmp_path / "gradio")
    return env


def wait_for_page(url: str, proc: subprocess.Popen, timeout_s: float = 90.0) -> bytes:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"the server exited with {proc.returncode}:\n{out}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200
                return response.read()
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout_s} s")


@contextmanager
def running_server(args: list[str], env: dict[str, str], url: str) -> Iterator[bytes]:
    """Start the server, wait until its page answers 200, yield the page, then stop it."""
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        yield wait_for_page(url, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
