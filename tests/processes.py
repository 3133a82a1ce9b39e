"""Starting and stopping `medplib worker` processes in tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_worker(env: dict[str, str], log: Path, *extra: str) -> subprocess.Popen:
    """A worker in its own process group (so stopping it also stops its pool children)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "medplib.cli", "worker", "--loglevel", "INFO", *extra],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
