"""`medplib bench ui`: a client's view of the web app, from asking to the stored answer.

The web app runs in this process with a stand-in model that streams its answer across a
fixed latency L (a word at a time), in embedded mode (SQLite, in-process runner) and in
distributed mode (PostgreSQL, Redis, one Celery worker process). A `gradio_client` client,
as a browser or script would, uploads an image and asks questions one after another through
the named ``/ask`` endpoint, waiting for the answer. Questions are timed the way the page's own
JavaScript client sends them: one POST to the queue and the answer read from the server-sent
event stream as it arrives (`gradio_client` looks for new messages every 50 ms, which would
add up to that much to every number here). Reported per mode:

- ``overhead``: the answer's round trip minus L (queueing, storage, notices, HTTP);
- ``first_text_after_emit``: from the stand-in emitting its first word (the job's start plus
  L / words) to that text reaching the web process's job notices, which the page renders
  from. The job's start is the worker's clock, the arrival this process's: same host.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform as host
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

STAND_IN_ANSWER_PREFIX = "noop answer to: "


def register(bsub: Any) -> None:
    p = bsub.add_parser("ui", help="a client's round trip to the answer, embedded and distributed")
    p.add_argument("--questions", type=int, default=30, help="questions per mode")
    p.add_argument(
        "--model-seconds", type=float, default=0.2, help="stand-in model time per answer (L)"
    )
    p.add_argument(
        "--modes", default="embedded,distributed", help="comma-separated: embedded, distributed"
    )
    p.add_argument("--broker-url", default="redis://127.0.0.1:6379/9")
    p.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.questions < 1 or not modes or not set(modes) <= {"embedded", "distributed"}:
        print(
            "medplib bench ui: error: --questions must be at least 1 and --modes a list of "
            "embedded, distributed",
            file=sys.stderr,
        )
        return 2
    # Gradio's own messages go to stderr: stdout carries the JSON alone.
    with contextlib.redirect_stdout(sys.stderr):
        results = [
            run_mode(
                mode,
                questions=args.questions,
                model_s=args.model_seconds,
                broker_url=args.broker_url,
                postgres_url=args.postgres_url,
            )
            for mode in modes
        ]
    print(
        json.dumps(
            {
                "benchmark": "ui",
                "command": f"medplib bench ui --questions {args.questions} "
                f"--model-seconds {args.model_seconds} --modes {','.join(modes)} --json",
                "machine": {
                    "cpus": len(os.sched_getaffinity(0)),
                    "platform": host.platform(),
                    "python": host.python_version(),
                },
                "model_seconds": args.model_seconds,
                "results": results,
            },
            indent=2,
        )
    )
    return 0


class _FirstText:
    """Records when each job's first streamed text reaches this process's notices."""

    def __init__(self, events: Any) -> None:
        self.arrived: dict[str, float] = {}
        self._lock = threading.Lock()
        original = events.publish

        def publish(job_id: str, *, text: str | None = None) -> None:
            if text is not None:
                with self._lock:
                    self.arrived.setdefault(job_id, time.time())
            original(job_id, text=text)

        events.publish = publish


def run_mode(
    mode: str, *, questions: int, model_s: float, broker_url: str, postgres_url: str
) -> dict[str, Any]:
    from gradio_client import Client, handle_file

    from serving.bench.stats import summary_ms
    from serving.services.turns import job_view

    with (
        tempfile.TemporaryDirectory() as scratch,
        _web_app(
            mode, Path(scratch), model_s, broker_url=broker_url, postgres_url=postgres_url
        ) as (url, platform),
    ):
        first = _FirstText(platform.events)
        image = Path(scratch) / "phantom.png"
        _phantom(image)
        client = Client(url, verbose=False)
        made = client.predict(handle_file(str(image)), "", 2, -1, "bench", api_name="/upload")
        session_id = made["session_id"]
        asker = QueueClient(client)
        asker.call("/ask", [session_id, "warm-up", "", True])
        overhead_s: list[float] = []
        after_emit_s: list[float] = []
        for i in range(questions):
            question = f"Describe the image ({i})"
            start = time.perf_counter()
            answer = asker.call("/ask", [session_id, question, "", True])
            elapsed = time.perf_counter() - start
            if answer.get("status") != "succeeded":
                raise RuntimeError(f"question {i} ended {answer.get('status')}")
            overhead_s.append(elapsed - model_s)
            job = platform.call(job_view, job_id=answer["job_id"])
            words = len((STAND_IN_ANSWER_PREFIX + question).split(" "))
            assert job.started_at is not None  # it succeeded, so it started
            started = job.started_at.replace(tzinfo=job.started_at.tzinfo or timezone.utc)
            emitted = started.timestamp() + model_s / words
            if answer["job_id"] in first.arrived:
                after_emit_s.append(first.arrived[answer["job_id"]] - emitted)
    return {
        "mode": mode,
        "questions": questions,
        "overhead": summary_ms(overhead_s),
        "first_text_after_emit": summary_ms(after_emit_s),
        "streamed": f"{len(after_emit_s)}/{questions}",
    }


class QueueClient:
    """Calls a named endpoint as the page's JavaScript client does: join, then read the stream.

    It borrows a `gradio_client.Client`'s session hash (so the anonymous identity, and with it
    the session's owner, is the same) and its endpoint descriptions (where state slots go).
    """

    def __init__(self, client: Any) -> None:
        import httpx

        self._client = client  # its endpoint descriptions say where the state slots are
        self._http = httpx.Client(base_url=client.src_prefixed.rstrip("/"), timeout=120)

    def call(self, api_name: str, data: list[Any]) -> Any:
        fn_index = self._client._infer_fn_index(api_name, None)
        endpoint = self._client.endpoints[fn_index]
        joined = self._http.post(
            "/queue/join",
            json={
                "data": list(endpoint.insert_empty_state(*data)),
                "fn_index": fn_index,
                "session_hash": self._client.session_hash,
                "event_data": None,
                "trigger_id": None,
            },
        )
        joined.raise_for_status()
        event_id = joined.json()["event_id"]
        params = {"session_hash": self._client.session_hash}
        with self._http.stream("GET", "/queue/data", params=params) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") != event_id:
                    continue
                if message.get("msg") == "process_completed":
                    output = message.get("output") or {}
                    if not message.get("success", False):
                        raise RuntimeError(f"{api_name} failed: {output.get('error')}")
                    shown = endpoint.remove_skipped_components(*output["data"])
                    return endpoint.reduce_singleton_output(*shown)
        raise RuntimeError(f"{api_name}: the event stream ended before the answer")


@contextmanager
def _web_app(
    mode: str, root: Path, model_s: float, *, broker_url: str, postgres_url: str
) -> Iterator[tuple[str, Any]]:
    from alembic import command

    from serving.migrate import alembic_config
    from serving.settings import Settings
    from webapp.commands import create_app, launch

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    common = {
        "artefact_dir": root / "artefacts",
        "predictor": "noop",
        "noop_delay_s": model_s,
        "port": port,
        # One client asks back to back: the anonymous per-minute limits would stop it.
        "anon_jobs_per_minute": 10_000,
        "anon_jobs_per_address_per_minute": 0,
    }
    with _database(mode, root, postgres_url) as url:
        command.upgrade(alembic_config(url), "head")
        broker = broker_url if mode == "distributed" else ""
        settings = Settings(database_url=url, broker_url=broker, **common)
        with _worker(settings, model_s) if broker else _nothing():
            demo, platform = create_app(settings)
            platform.runner.start()
            launch(demo, settings, prevent_thread_lock=True)
            try:
                yield f"http://127.0.0.1:{port}/", platform
            finally:
                demo.close()
                platform.runner.stop()


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


@contextmanager
def _database(mode: str, root: Path, postgres_url: str) -> Iterator[str]:
    if mode == "embedded":
        yield f"sqlite:///{root / 'bench.db'}"
        return
    from serving.bench.databases import scratch_postgres

    with scratch_postgres(postgres_url) as url:
        yield url


@contextmanager
def _worker(settings: Any, model_s: float) -> Iterator[None]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDPLIB_")},
        "MEDPLIB_DATABASE_URL": settings.database_url,
        "MEDPLIB_BROKER_URL": settings.broker_url,
        "MEDPLIB_PREDICTOR": "noop",
        "MEDPLIB_NOOP_DELAY_S": str(model_s),
        "MEDPLIB_ARTEFACT_DIR": str(settings.artefact_dir),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "medplib.cli", "worker", "--loglevel", "WARNING"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield None
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _phantom(path: Path) -> None:
    """A 512 x 512 CT-like disc: a realistic image size, a few kB of PNG."""
    yy, xx = np.mgrid[:512, :512]
    disc = ((yy - 256) ** 2 / 200**2 + (xx - 256) ** 2 / 230**2) < 1
    Image.fromarray((disc * 120 + 20).astype(np.uint8)).convert("RGB").save(path)
