"""No server-side fetches: a file given as a URL or a server path is refused, never read.

Against the real app (launched in-process) with a loopback HTTP server that records every
request: whatever a client puts where a file belongs, the loopback server sees nothing, the
server's download helpers are never called, nothing is stored, and the client gets one
sentence.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import ValidationError
from sqlalchemy import func, select

from serving.models import ChatSession, Image
from tests.reliability.live import Live, Tripwire, live_app, tripwire
from tests.webapp.conftest import write_png
from webapp.edge import NO_FETCH

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

META = {"_type": "gradio.FileData"}


@pytest.fixture(scope="module")
def wire() -> Iterator[Tripwire]:
    with tripwire() as made:
        yield made


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[Live]:
    # An upload folder of its own, so that the app's database and every other file the
    # tests make lie outside it, as server files do in production.
    import os

    before = os.environ["GRADIO_TEMP_DIR"]
    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("no-fetch-uploads"))
    try:
        with live_app(tmp_path_factory.mktemp("no-fetch")) as live:
            yield live
    finally:
        os.environ["GRADIO_TEMP_DIR"] = before


@pytest.fixture(autouse=True)
def no_download_attempts(monkeypatch, wire) -> Iterator[list[str]]:
    """Gradio's own download paths (SSRF-filtered, but they do fetch public URLs) and the
    proxy route must never be reached: record any call."""
    from gradio import processing_utils, route_utils

    calls: list[str] = []

    def spy(name):
        async def fetch(url, *args, **kwargs):
            calls.append(f"{name}: {url}")
            raise AssertionError("the server tried to fetch a user-supplied URL")

        return fetch

    for module, name in (
        (processing_utils, "async_ssrf_protected_download"),
        (processing_utils, "async_ssrf_protected_get"),
        (route_utils, "secure_url_stream_response"),
    ):
        monkeypatch.setattr(module, name, spy(name))
    wire.hits.clear()
    yield calls
    assert calls == [] and wire.hits == [], (calls, wire.hits)


def _counts(app: Live) -> tuple[int, int]:
    return app.platform.call(
        lambda db: (
            db.scalar(select(func.count(Image.id))) or 0,
            db.scalar(select(func.count(ChatSession.id))) or 0,
        )
    )


def _call(app: Live, api_name: str, data: list) -> httpx.Response:
    """The simple REST route (``/gradio_api/call/<name>``), as curl would use it."""
    return httpx.post(f"{app.url}gradio_api/call/{api_name}", json={"data": data}, timeout=30)


def _refused(response: httpx.Response, sentence: str = NO_FETCH) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["error"] == sentence


@pytest.mark.parametrize(
    "target", ["http://127.0.0.1:{port}/x.png", "https://example.com/scan.png"]
)
def test_upload_of_a_url_through_gradio_client_is_refused_unfetched(app, wire, target):
    before = _counts(app)
    url = target.format(port=wire.port)
    with pytest.raises(ValidationError) as refused:
        Client(app.url, verbose=False).predict(handle_file(url), "", 2, -1, "t", api_name="/upload")
    assert NO_FETCH in str(refused.value)
    assert _counts(app) == before


def test_file_data_whose_path_is_a_url_is_refused_on_the_rest_route(app, wire):
    before = _counts(app)
    data = [{"path": wire.url(), "meta": META}, "", 2, -1, "t"]
    _refused(_call(app, "upload", data))
    assert _counts(app) == before


def test_file_data_with_a_url_field_and_a_foreign_path_is_refused(app, wire):
    # Gradio ignores `url` on input, but a path outside the upload folder is no upload.
    data = [{"path": "/tmp/elsewhere.png", "url": wire.url(), "meta": META}, "", 2, -1, ""]
    _refused(_call(app, "upload", data))


@pytest.mark.parametrize("where", ["database", "etc", "traversal"])
def test_file_data_naming_a_server_file_is_refused_unread(app, where):
    from gradio.utils import get_upload_folder

    path = {
        "database": app.platform.settings.database_url.removeprefix("sqlite:///"),
        "etc": "/etc/hostname",
        "traversal": f"{get_upload_folder()}/../../etc/hostname",
    }[where]
    before = _counts(app)
    _refused(_call(app, "upload", [{"path": path, "meta": META}, "", 2, -1, ""]))
    assert _counts(app) == before


def test_file_data_nested_in_the_ask_endpoint_is_refused(app, wire):
    smuggled = {"image": {"path": wire.url(), "meta": META}, "points": []}
    _refused(_call(app, "ask", ["s" * 32, smuggled, "", False]))


def test_queue_join_with_a_url_file_is_refused(app, wire):
    config = httpx.get(f"{app.url}config", timeout=30).json()
    upload = next(d for d in config["dependencies"] if d.get("api_name") == "upload")
    body = {
        "data": [{"path": wire.url(), "meta": META}, "", 2, -1, ""],
        "fn_index": upload["id"],
        "session_hash": "nofetch0001",
        "trigger_id": None,
        "event_data": None,
    }
    _refused(httpx.post(f"{app.url}gradio_api/queue/join", json=body, timeout=30))


@pytest.mark.parametrize("route", ["file=", "proxy="])
def test_file_and_proxy_routes_do_not_fetch_urls(app, wire, route):
    response = httpx.get(f"{app.url}gradio_api/{route}{wire.url()}", timeout=30)
    assert response.status_code == 403 and response.json()["error"] == NO_FETCH


def test_a_real_upload_still_works(app, tmp_path):
    made = Client(app.url, verbose=False).predict(
        handle_file(write_png(tmp_path / "scan.png", 60, 40, seed=3)),
        "",
        2,
        -1,
        "real",
        api_name="/upload",
    )
    assert made["width_px"] == 60 and made["height_px"] == 40


@pytest.mark.parametrize("kind", ["server file", "url", "traversal"])
def test_handlers_read_only_files_inside_the_upload_folder(tmp_path, monkeypatch, kind):
    """Behind the edge, the handlers check again: a path that reached them by another route
    is refused in the same words, and the file is not read."""
    import gradio as gr

    from webapp.handlers import api as api_handlers
    from webapp.handlers import upload as upload_handlers
    from webapp.handlers.common import UserFacingError, uploaded_path

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    secret = write_png(tmp_path / "server-only.png", 30, 20)  # outside the upload folder
    path = {
        "server file": secret,
        "url": "http://127.0.0.1:9/x.png",
        "traversal": str(uploads / ".." / "server-only.png"),
    }[kind]
    with pytest.raises(UserFacingError, match="Only files uploaded to this server are read"):
        upload_handlers.read_upload(None, path)  # type: ignore[arg-type]
    with pytest.raises(gr.Error, match="Only files uploaded to this server are read"):
        api_handlers.upload(None, path, "", 2, -1, "t", None, None)  # type: ignore[arg-type]
    inside = write_png(uploads / "scan.png", 30, 20)
    assert uploaded_path(inside) == str((uploads / "scan.png").resolve())
