"""The real web app on a free port with chosen settings, and a loopback server that counts
every request it gets (for "the server must fetch nothing" checks)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.invariants import check_invariants
from serving.platform import Platform, build_platform
from serving.predictors import PredictorHolder
from serving.settings import Settings
from tests.webapp.conftest import FakePredictor, free_port, migrate, png_bytes


@dataclass
class Live:
    url: str
    platform: Platform


@contextmanager
def live_app(root: Path, predictor: Any = FakePredictor, **overrides: Any) -> Iterator[Live]:
    """A migrated SQLite database, the platform and the web app, launched in-process."""
    from webapp.commands import create_app, launch

    url = f"sqlite:///{root / 'medplib.db'}"
    migrate(url)
    settings = Settings(
        database_url=url, artefact_dir=root / "artefacts", port=free_port(), **overrides
    )
    platform = build_platform(settings, holder=PredictorHolder(predictor))
    demo, platform = create_app(settings, platform)
    platform.runner.start()
    launch(demo, settings, prevent_thread_lock=True)
    try:
        yield Live(f"http://127.0.0.1:{settings.port}/", platform)
        # Whatever the tests threw at it, the record is sound.
        assert platform.call(check_invariants, store=platform.store) == []
    finally:
        demo.close()
        platform.runner.stop()


@dataclass
class Tripwire:
    """A loopback HTTP server; ``hits`` lists every path anyone requested from it."""

    port: int = 0
    hits: list[str] = field(default_factory=list)

    def url(self, path: str = "/x.png") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextmanager
def tripwire() -> Iterator[Tripwire]:
    wire = Tripwire()
    body = png_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            wire.hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    wire.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield wire
    finally:
        server.shutdown()
        server.server_close()
