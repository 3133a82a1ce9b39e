"""`medplib serve`: the web app (and, in embedded mode, the job runner) in one process."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # `medplib --help` must not pay for importing gradio
    import gradio as gr

    from serving.platform import Platform
    from serving.settings import Settings

# One queued request per event by default; the ask/poll events lift this themselves.
DEFAULT_CONCURRENCY = 8
# Queued page events beyond this are refused with "too busy" instead of waiting forever.
MAX_QUEUE = 256


def register_serve(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the web app (embedded mode also runs the jobs)",
        description=(
            "Serve the MedPLIB web app. Settings come from MEDPLIB_* variables; --host and "
            "--port override MEDPLIB_HOST and MEDPLIB_PORT."
        ),
    )
    p.add_argument("--host", default=None, help="address to bind (default: MEDPLIB_HOST)")
    p.add_argument("--port", type=int, default=None, help="port (default: MEDPLIB_PORT)")
    p.add_argument(
        "--share",
        action="store_true",
        help="also open a temporary public gradio.live link (off by default)",
    )
    p.set_defaults(func=_serve)


def create_app(
    settings: Settings | None = None, platform: Platform | None = None
) -> tuple[gr.Blocks, Platform]:
    """The Blocks app and its platform (built from settings when not given), queue enabled.

    The caller starts ``platform.runner`` and launches the app (see `launch`).
    """
    from serving.platform import build_platform
    from serving.settings import load_settings_or_exit
    from webapp.app import build_blocks
    from webapp.handlers.common import Web

    if platform is None:
        platform = build_platform(settings or load_settings_or_exit())
    demo = build_blocks(Web(platform))
    demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY, max_size=MAX_QUEUE)
    return demo, platform


def blocked_paths(settings: Settings) -> list[str]:
    """Server-side data the web server must never hand out as a file."""
    paths = [str(Path(settings.artefact_dir).resolve())]
    if settings.database_url.startswith("sqlite:///"):
        db_file = Path(settings.database_url.removeprefix("sqlite:///")).resolve()
        paths += [str(db_file), f"{db_file}-wal", f"{db_file}-shm", f"{db_file}-journal"]
    return paths


def launch(
    demo: gr.Blocks,
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    share: bool = False,
    prevent_thread_lock: bool = False,
) -> Any:
    from gradio.utils import get_upload_folder
    from starlette.middleware import Middleware

    from webapp.app import CSS
    from webapp.edge import EdgeGuard

    # Uvicorn (under Gradio) rewrites a request's client address from X-Forwarded-For when
    # the connection comes from an address in FORWARDED_ALLOW_IPS, by default loopback. The
    # header is believed only from MEDPLIB_TRUSTED_PROXIES (none by default), so uvicorn is
    # told the same list: per-address limits cannot be dodged with a forged header.
    os.environ["FORWARDED_ALLOW_IPS"] = settings.trusted_proxies
    result = demo.launch(
        server_name=host or settings.host,
        server_port=port or settings.port,
        share=share,
        root_path=settings.root_path or None,
        css=CSS,
        # Gradio refuses larger uploads itself (413) before any handler reads them.
        max_file_size=settings.max_upload_bytes,
        # Nothing beyond Gradio's own cache is served as a file; artefacts go through the
        # store's handlers, and the store and database are blocked outright.
        allowed_paths=[],
        blocked_paths=blocked_paths(settings),
        strict_cors=True,
        # Refusals are `gr.Error`s, shown in their words; any other exception is a bug whose
        # text (SQL, paths) must not reach the page: it is logged, the user sees "Error".
        show_error=False,
        # Before Gradio reads a request: no fetching of URLs or paths given as files, no
        # NaN/Infinity, NUL or lone surrogates in any input (see webapp.edge).
        app_kwargs={"middleware": [Middleware(EdgeGuard, upload_dir=get_upload_folder)]},
        # Our own routes are added once Gradio's app exists; then we block if asked to.
        prevent_thread_lock=True,
        quiet=prevent_thread_lock,
    )
    router = getattr(demo, "medplib_router", None)
    if router is not None:
        demo.app.include_router(router)
    if not prevent_thread_lock:
        demo.block_thread()
    return result


def _serve(args: argparse.Namespace) -> int:
    from serving.migrate import prepare_database_or_exit
    from serving.settings import load_settings_or_exit

    settings = load_settings_or_exit()
    prepare_database_or_exit(settings)
    demo, platform = create_app(settings)
    platform.runner.start()
    try:
        launch(demo, settings, host=args.host, port=args.port, share=args.share)
    finally:
        platform.runner.stop()
    return 0
