"""A private Redis server and a cuttable PostgreSQL proxy, so faults hurt nobody else."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.migrate import alembic_config
from tests.conftest import IN_CI, require_service
from tests.serving.conftest import make_platform  # noqa: F401 (a fixture shared with tests/worker)
from tests.webapp.conftest import chromium  # noqa: F401 (a fixture: headless Chromium)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    def __init__(self, port: int, workdir: Path) -> None:
        self.port, self.workdir = port, workdir
        self.url = f"redis://127.0.0.1:{port}/0"

    def start(self) -> None:
        subprocess.run(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--dir",
                str(self.workdir),
                "--pidfile",
                str(self.workdir / "redis.pid"),
            ],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("private redis did not start")

    def stop(self) -> None:
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                time.sleep(0.05)
            except OSError:
                return


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is not installed (CI=true)")
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


class TcpProxy:
    """Forwards a local port to PostgreSQL; `cut()` drops every connection and refuses new ones."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._open = threading.Event()
        self._open.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._server.accept()
            except OSError:
                continue
            if not self._open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            for s in self._conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self._conns.clear()

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._stop = True
        self.cut()
        self._server.close()


@pytest.fixture
def pg_proxy(postgres_url) -> Iterator[tuple[TcpProxy, str]]:
    from sqlalchemy.engine import make_url

    require_service("PostgreSQL", "127.0.0.1", 5432)
    from alembic import command

    command.upgrade(alembic_config(postgres_url), "head")
    proxy = TcpProxy(("127.0.0.1", 5432))
    url = make_url(postgres_url).set(port=proxy.port).render_as_string(hide_password=False)
    yield proxy, url
    proxy.close()


@pytest.fixture(autouse=True)
def refusals_are_fit_for_users(monkeypatch) -> Iterator[list[str]]:
    """Every refusal raised during a reliability test is checked when it ends: no SQL, file
    paths, tracebacks or Python internals (see `tests.reliability.messages`)."""
    import gradio as gr

    from medplib.errors import UserInputError
    from serving.services.errors import ServiceError
    from tests.reliability.messages import leaks
    from webapp.edge import Refused
    from webapp.handlers.common import UserFacingError

    seen: list[str] = []
    for cls in (ServiceError, UserInputError, UserFacingError, Refused, gr.Error):
        original = cls.__init__

        def record(self, *args, _original=original, **kwargs):
            message = args[0] if args else kwargs.get("message", "")
            seen.append(str(message))
            _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", record)
    yield seen
    leaked = [(m, leaks(m)) for m in seen if leaks(m)]
    assert not leaked, f"messages for users show internals: {leaked}"
