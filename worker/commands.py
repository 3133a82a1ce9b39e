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
        description="Run one Celery worker. Start one per GPU, each with its own --device; "
        "each worker serves one named checkpoint (MEDPLIB_CHECKPOINTS) from its queue.",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="the named checkpoint to load and serve (default: the settings' default one)",
    )
    p.add_argument(
        "-Q",
        "--queues",
        default=None,
        help="comma-separated queues to consume (default: the checkpoint's, gpu.medplib for "
        "the default checkpoint, gpu.<name> for the others)",
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
    registry = settings.checkpoint_queues
    checkpoint = args.checkpoint or settings.default_checkpoint
    if checkpoint not in registry:
        print(
            f"medplib worker: error: no checkpoint named {checkpoint!r}; the settings name "
            f"{', '.join(registry)}",
            file=sys.stderr,
        )
        return 2
    queues = args.queues or registry[checkpoint]
    problem = _queue_problem(queues, checkpoint=checkpoint, registry=registry)
    if problem:
        print(f"medplib worker: error: {problem}", file=sys.stderr)
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
    tasks.preload_model = tasks.consumes_inference(queues, registry.values())
    tasks.served_checkpoint = checkpoint
    beat = ["--beat", "--schedule", str(Path(tempfile.gettempdir()) / "medplib-beat")]
    name = f"medplib-{os.getpid()}@{socket.gethostname()}"
    app.worker_main(
        argv=[
            "worker",
            *(beat if args.beat else []),
            "--queues",
            queues,
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


def _queue_problem(queues: str, *, checkpoint: str, registry: dict[str, str]) -> str | None:
    """Why a worker serving ``checkpoint`` must not consume ``queues``, or None.

    One model per worker process: another checkpoint's jobs must never reach it, and a GPU
    queue no checkpoint has would never receive a job.
    """
    own = registry[checkpoint]
    for queue in sorted({q.strip() for q in queues.split(",") if q.strip()}):
        if queue in registry.values() and queue != own:
            return (
                f"--queues names {queue}, another checkpoint's queue; a worker serves one "
                f"checkpoint ({checkpoint} consumes {own})"
            )
        if queue.startswith("gpu.") and queue not in registry.values():
            return f"no checkpoint has the queue {queue}; {checkpoint} consumes {own}"
    return None
