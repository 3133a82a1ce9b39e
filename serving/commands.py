"""`medplib db`, `medplib review` and `medplib bench`, contributed to the `medplib` command.

Both front ends share these: the database belongs to the serving core, and the platform
benchmarks drive the core directly.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from serving.migrate import alembic_config, ensure_admin


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


def _db_upgrade(args: argparse.Namespace) -> int:
    from alembic import command

    from serving.settings import load_settings_or_exit

    settings = load_settings_or_exit()
    command.upgrade(alembic_config(settings.database_url), args.revision)
    if settings.admin_password:
        ensure_admin(settings)
    print(f"database at {args.revision}: {_redacted(settings.database_url)}")
    return 0


def _db_downgrade(args: argparse.Namespace) -> int:
    from alembic import command

    from serving.settings import load_settings_or_exit

    settings = load_settings_or_exit()
    command.downgrade(alembic_config(settings.database_url), args.revision)
    print(f"database downgraded to {args.revision}")
    return 0


def _db_current(args: argparse.Namespace) -> int:
    from alembic import command

    from serving.settings import load_settings_or_exit

    command.current(alembic_config(load_settings_or_exit().database_url))
    return 0


def _db_create_user(args: argparse.Namespace) -> int:
    from serving.db import session_factory, transaction
    from serving.models import Role
    from serving.services.accounts import create_user
    from serving.services.errors import ServiceError
    from serving.settings import load_settings_or_exit

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

    from serving.bench.load import run

    if args.users < 1 or args.jobs < 1:
        print("medplib bench load: error: --users and --jobs must be at least 1", file=sys.stderr)
        return 2
    print(json.dumps(run(args), indent=2))
    return 0


def _bench_queue(args: argparse.Namespace) -> int:
    import json

    from serving.bench.queue import run

    print(json.dumps(run(args), indent=2))
    return 0


def register_review(sub: Any) -> None:
    p = sub.add_parser("review", help="reviewed answers: export them as training data")
    rsub = p.add_subparsers(dest="review_command", metavar="ACTION")
    rsub.required = True
    export = rsub.add_parser(
        "export-dataset",
        help="write accepted and corrected answers as a MeCoVQA corpus for `medplib train`",
        description="Answers with a corrected mask or an accepting rating become grounding, "
        "region and VQA records (corrected masks replace the model's), with data_card.json/.md "
        "naming the reviewers. Fine-tune on it with `medplib train --stage moe --init CKPT`.",
    )
    export.add_argument("--out", required=True, type=Path, help="new or empty folder")
    export.add_argument(
        "--class", dest="class_link_id", default=None, metavar="ID", help="only this class link"
    )
    export.add_argument(
        "--since",
        default=None,
        metavar="DATE",
        help="only answers rated or corrected at or after DATE (YYYY-MM-DD or ISO 8601; UTC)",
    )
    export.add_argument(
        "--min-rating",
        type=int,
        default=None,
        metavar="N",
        help="accept ratings with text score >= N (1-5) instead of masks all good / text correct",
    )
    export.set_defaults(func=_review_export)


def _review_export(args: argparse.Namespace) -> int:
    from serving.db import session_factory, transaction
    from serving.services.dataset_export import parse_since, select_for_export, write_export
    from serving.services.errors import ServiceError
    from serving.settings import load_settings_or_exit
    from serving.store import ArtefactStore

    def fail(message: str) -> int:
        print(f"medplib review export-dataset: error: {message}", file=sys.stderr)
        return 2

    try:
        since = parse_since(args.since) if args.since is not None else None
    except ValueError as exc:
        return fail(f"--since {exc}")
    out: Path = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        return fail(f"--out {out} exists and is not an empty folder; choose a new or empty one")
    settings = load_settings_or_exit()
    try:
        # The transaction ends before the files are written: SQLite would hold its lock.
        with transaction(session_factory(settings.database_url)) as db:
            selection = select_for_export(
                db,
                actor=None,
                class_link_id=args.class_link_id,
                since=since,
                min_rating=args.min_rating,
            )
        summary = write_export(selection, store=ArtefactStore(settings.artefact_dir), out_dir=out)
    except ServiceError as exc:
        return fail(str(exc))
    print(summary.line())
    return 0
