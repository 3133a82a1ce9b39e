"""`medplib worker`, contributed to the `medplib` command."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path
from typing import Any


def register_worker(sub: Any) -> None:
    p = sub.add_parser(
        "worker",
        help="run a Celery worker for GPU inference (distributed mode)",
        description="Run one Celery worker. Start one per GPU, each with its own --device.",
    )
    p.add_argument(
        "-Q", "--queues", default="gpu.medplib", help="comma-separated queues to consume"
    )
    p.add_argument("--device", default=None, help="cuda:0, cuda:1, ... or cpu")
    p.add_argument("-c", "--concurrency", type=int, default=1, help="processes (1 per GPU)")
    p.add_argument(
        "--pool",
        default="prefork",
        choices=["prefork", "solo"],
        help="prefork enforces hard time limits; solo runs in one process (development)",
    )
    p.add_argument("--loglevel", default="INFO")
    p.add_argument(
        "--beat",
        action="store_true",
        help="also run the periodic reconciler schedule (one such worker per deployment, "
        "consuming the cpu queue)",
    )
    p.add_argument(
        "--ping",
        action="store_true",
        help="exit 0 if a worker on this host answers (a container healthcheck), else 1",
    )
    p.set_defaults(func=_worker)


def _worker(args: argparse.Namespace) -> int:
    if args.device:
        # Children read their settings from the environment after the fork.
        os.environ["MEDPLIB_DEVICE"] = args.device
    from serving.settings import load_settings_or_exit

    settings = load_settings_or_exit()
    if settings.embedded:
        print(
            "medplib worker: error: MEDPLIB_BROKER_URL is empty; workers are for distributed "
            "mode (embedded mode runs jobs inside `medplib serve`)",
            file=sys.stderr,
        )
        return 2
    if args.concurrency < 1:
        print("medplib worker: error: --concurrency must be at least 1", file=sys.stderr)
        return 2
    from serving.celery_app import create_celery

    app = create_celery(settings)
    if args.ping:
        replies = app.control.ping(timeout=5.0) or []
        here = f"@{socket.gethostname()}"
        return 0 if any(name.endswith(here) for reply in replies for name in reply) else 1
    import tempfile

    from worker import tasks

    # A CPU/beat worker never answers questions: it need not load the model.
    tasks.preload_model = tasks.consumes_inference(args.queues)
    beat = ["--beat", "--schedule", str(Path(tempfile.gettempdir()) / "medplib-beat")]
    name = f"medplib-{os.getpid()}@{socket.gethostname()}"
    app.worker_main(
        argv=[
            "worker",
            *(beat if args.beat else []),
            "--queues",
            args.queues,
            "--concurrency",
            str(args.concurrency),
            "--pool",
            args.pool,
            "--hostname",
            name,
            "--loglevel",
            args.loglevel,
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0
