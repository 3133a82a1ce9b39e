"""`medplib worker` and `medplib db`, contributed to the `medplib` command."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path
from typing import Any

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


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
    from worker.settings import load_settings_or_exit

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
    from worker.celery_app import create_celery

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


def register_db(sub: Any) -> None:
    p = sub.add_parser("db", help="database migrations and accounts")
    dbsub = p.add_subparsers(dest="db_command", metavar="ACTION")
    dbsub.required = True
    up = dbsub.add_parser("upgrade", help="apply migrations (default: to the newest)")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=_db_upgrade)
    down = dbsub.add_parser("downgrade", help="undo migrations (default: the last one)")
    down.add_argument("revision", nargs="?", default="-1")
    down.set_defaults(func=_db_downgrade)
    cur = dbsub.add_parser("current", help="print the database's revision")
    cur.set_defaults(func=_db_current)
    user = dbsub.add_parser("create-user", help="create an account")
    user.add_argument("--username", required=True)
    user.add_argument("--role", default="user", choices=["user", "instructor", "reviewer", "admin"])
    user.add_argument(
        "--password-env",
        default="MEDPLIB_NEW_PASSWORD",
        help="environment variable holding the password (never a command-line argument)",
    )
    user.set_defaults(func=_db_create_user)


def alembic_config(database_url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def _db_upgrade(args: argparse.Namespace) -> int:
    from alembic import command

    from worker.settings import load_settings_or_exit

    settings = load_settings_or_exit()
    command.upgrade(alembic_config(settings.database_url), args.revision)
    if settings.admin_password:
        _ensure_admin(settings)
    print(f"database at {args.revision}: {_redacted(settings.database_url)}")
    return 0


def _db_downgrade(args: argparse.Namespace) -> int:
    from alembic import command

    from worker.settings import load_settings_or_exit

    settings = load_settings_or_exit()
    command.downgrade(alembic_config(settings.database_url), args.revision)
    print(f"database downgraded to {args.revision}")
    return 0


def _db_current(args: argparse.Namespace) -> int:
    from alembic import command

    from worker.settings import load_settings_or_exit

    command.current(alembic_config(load_settings_or_exit().database_url))
    return 0


def _db_create_user(args: argparse.Namespace) -> int:
    from worker.db import session_factory, transaction
    from worker.models import Role
    from worker.services.accounts import create_user
    from worker.services.errors import ServiceError
    from worker.settings import load_settings_or_exit

    password = os.environ.get(args.password_env, "")
    if not password:
        print(f"medplib db: error: set the password in ${args.password_env}", file=sys.stderr)
        return 2
    settings = load_settings_or_exit()
    try:
        with transaction(session_factory(settings.database_url)) as db:
            create_user(db, username=args.username, password=password, role=Role(args.role))
    except ServiceError as exc:
        print(f"medplib db: error: {exc}", file=sys.stderr)
        return 2
    print(f"created {args.role} {args.username}")
    return 0


def _ensure_admin(settings: Any) -> None:
    from sqlalchemy import select

    from worker.db import session_factory, transaction
    from worker.models import Role, User
    from worker.services.accounts import create_user, hash_password

    with transaction(session_factory(settings.database_url)) as db:
        admin = db.scalar(select(User).where(User.username == "admin"))
        if admin is None:
            create_user(db, username="admin", password=settings.admin_password, role=Role.admin)
        else:
            admin.password_hash = hash_password(settings.admin_password)
            admin.role = Role.admin


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def register_bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="benchmarks (JSON output)")
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    bsub.required = True
    q = bsub.add_parser("queue", help="platform overhead per job with a no-op model")
    q.add_argument("--jobs", type=int, default=100)
    q.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    q.add_argument(
        "--broker-url",
        default="redis://127.0.0.1:6379/9",
        help="Redis for the distributed runs; empty skips them",
    )
    q.add_argument(
        "--postgres-url",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        help="a PostgreSQL database the benchmark may create scratch databases from",
    )
    q.set_defaults(func=_bench_queue)
    load = bsub.add_parser("load", help="many users at once: completion, latency, leaks")
    load.add_argument("--users", type=int, default=20)
    load.add_argument("--jobs", type=int, default=200)
    load.add_argument("--workers", type=int, default=2, help="Celery workers (distributed)")
    load.add_argument(
        "--model-seconds", type=float, default=0.05, help="stand-in model time per answer"
    )
    load.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    load.add_argument("--broker-url", default="redis://127.0.0.1:6379/9")
    load.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    load.set_defaults(func=_bench_load)
    from importlib.metadata import entry_points

    for entry in entry_points(group="medplib.benchmarks"):
        entry.load()(bsub)  # e.g. `page`, which drives the web app in a browser
    try:
        from medplib.bench.cli import register as register_model_benchmarks
    except ImportError:
        return
    register_model_benchmarks(bsub)


def _bench_load(args: argparse.Namespace) -> int:
    import json

    from worker.bench.load import run

    if args.users < 1 or args.jobs < 1:
        print("medplib bench load: error: --users and --jobs must be at least 1", file=sys.stderr)
        return 2
    print(json.dumps(run(args), indent=2))
    return 0


def _bench_queue(args: argparse.Namespace) -> int:
    import json

    from worker.bench.queue import run

    print(json.dumps(run(args), indent=2))
    return 0
