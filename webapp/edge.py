"""The web edge: what every request is checked for before Gradio or a handler reads it.

`EdgeGuard` wraps the whole web app (see `webapp.commands.launch`):

- **No server-side fetches.** Gradio downloads an ``http(s)://`` URL given as a file's
  ``path`` in an event's input, and serves ``/gradio_api/file=<URL>`` by fetching the URL
  (both through an SSRF filter that still lets public addresses through). Here a file in an
  event's input must be one that was uploaded to this server (a path inside Gradio's upload
  folder); a URL, or a path anywhere else, is refused before anything is fetched or read,
  and so are ``file=<URL>`` and ``proxy=`` requests.
- **Clean input.** An event's JSON must be plain JSON: no ``NaN`` / ``Infinity`` (which
  Python's parser accepts and which would reach number fields as floats that break every
  conversion), no NUL characters and no lone surrogates in any text, and at most
  `MAX_JSON_BYTES`.

Each refusal is one sentence. Field-specific rules (lengths, ranges, ids) are the services'
(`serving.services.validation`); this layer refuses what no field may hold.

`client_address` names the client of a request for per-address limits; behind a reverse
proxy, ``X-Forwarded-For`` is believed only from `Settings.trusted_proxies`.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import unquote

from serving.services.validation import text_problem

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Event inputs are small JSON documents (files travel separately, through /upload).
MAX_JSON_BYTES = 16 * 1024 * 1024

NO_FETCH = (
    "Only files uploaded to this server are read: links and server paths are not fetched. "
    "Upload the file itself."
)
NOT_FINITE = "Numbers must be finite: NaN and Infinity are not accepted."
TOO_LARGE = f"The request is larger than {MAX_JSON_BYTES // (1024 * 1024)} MB."


class Refused(Exception):
    """A request the edge will not pass on; ``str()`` is the sentence for the client."""


def _url_like(value: str) -> bool:
    text = value.strip().lower()
    return "://" in text or text.startswith(("//", "\\\\", "data:"))


def _inside(path: str, folder: str) -> bool:
    try:
        real = os.path.realpath(path)
        root = os.path.realpath(folder)
    except (OSError, ValueError):
        return False
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _is_file_data(value: dict[str, Any]) -> bool:
    """A file reference as Gradio reads one: a ``path`` plus any of its file fields."""
    return isinstance(value.get("path"), str) and any(
        key in value for key in ("meta", "url", "orig_name", "mime_type", "is_stream", "size")
    )


def check_payload(value: Any, *, upload_dir: str) -> None:
    """Raise `Refused` for text or file references no input may hold (see module doc)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                raise Refused(f"Text in the request {problem}; remove it and try again.")
        elif isinstance(item, dict):
            if _is_file_data(item):
                path = item["path"]
                if _url_like(path) or not _inside(path, upload_dir):
                    raise Refused(NO_FETCH)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _no_constants(name: str) -> Any:
    raise Refused(NOT_FINITE)


def parse_json(body: bytes) -> Any:
    """Strict JSON: `Refused` for NaN / Infinity; ValueError for anything not JSON."""
    return json.loads(body, parse_constant=_no_constants)


def _file_target(path: str) -> str | None:
    """What a ``.../file=<target>`` or ``.../proxy=<target>`` path asks for, if it is one."""
    for marker in ("/file=", "/proxy="):
        if marker in path:
            return marker + path.split(marker, 1)[1]
    return None


class EdgeGuard:
    """ASGI middleware applying the module's rules; everything else passes unchanged."""

    def __init__(self, app: ASGIApp, *, upload_dir: Callable[[], str]) -> None:
        self.app = app
        self.upload_dir = upload_dir

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        path = unquote(scope.get("path", ""))
        target = _file_target(path)
        if target is not None and method in ("GET", "HEAD"):
            if target.startswith("/proxy=") or _url_like(target[len("/file=") :]):
                await _refuse(send, 403, NO_FETCH)
                return
        if method != "POST" or not _json_body(scope):
            await self.app(scope, receive, send)
            return
        try:
            body = await _read_body(receive)
        except Refused as exc:
            await _refuse(send, 413, str(exc))
            return
        try:
            check_payload(parse_json(body), upload_dir=self.upload_dir())
        except Refused as exc:
            await _refuse(send, 422, str(exc))
            return
        except (ValueError, RecursionError):
            pass  # not JSON at all: the route refuses it in its own words

        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def _json_body(scope: Scope) -> bool:
    # FastAPI reads a body as JSON when it says so, or says nothing at all.
    kind = _header(scope, b"content-type").split(";")[0].strip().lower()
    return not kind or kind.endswith("json")


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message.get("type") != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise Refused(TOO_LARGE)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _refuse(send: Send, status: int, message: str) -> None:
    # Gradio's own shape for refused input, so gradio_client raises it with the message.
    detail = [{"__type__": "validate", "is_valid": False, "message": message}]
    body = json.dumps({"error": message, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# Client addresses.

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def _trusted(ip: Any, trusted: Iterable[Network]) -> bool:
    return ip is not None and any(ip.version == net.version and ip in net for net in trusted)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: Iterable[Network]
) -> str | None:
    """The client's address: the connecting ``peer``, unless that is a trusted proxy.

    Then ``X-Forwarded-For`` is read from the right (each proxy appends the address it saw),
    skipping trusted proxies; the first other address is the client. Anything a client
    wrote into the header itself sits further left and is never reached.
    """
    trusted = tuple(trusted)
    peer_ip = _ip(peer or "")
    if peer_ip is None or not _trusted(peer_ip, trusted) or not forwarded_for:
        return str(peer_ip) if peer_ip is not None else None
    for hop in reversed(forwarded_for.split(",")):
        ip = _ip(hop)
        if ip is None:
            break  # garbage: trust nothing beyond the proxy that passed it on
        if not _trusted(ip, trusted):
            return str(ip)
    return str(peer_ip)


def request_address(request: Any, trusted: Iterable[Network]) -> str | None:
    """`client_address` of a Gradio or Starlette request (None without one)."""
    if request is None:
        return None
    client = getattr(request, "client", None)
    peer = getattr(client, "host", None)
    headers = getattr(request, "headers", None) or {}
    return client_address(peer, headers.get("x-forwarded-for"), trusted)


def current_address(trusted: Iterable[Network]) -> str | None:
    """The client address of the Gradio event being handled in this context, if any."""
    from gradio.context import LocalContext

    return request_address(LocalContext.request.get(None), trusted)
