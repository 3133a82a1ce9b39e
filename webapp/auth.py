"""The login cookie: an HTTP-only, SameSite=Strict cookie holding a login token.

Gradio events cannot set cookies, so after a login the page trades the one-time code the
login event gave it for the cookie here (``POST auth/session``), and a logout clears it
(``DELETE auth/session``). The token itself never reaches page script or storage.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from serving.services.errors import ServiceError
from serving.services.logins import LOGIN_TTL, end_login, redeem_login_code

COOKIE = "medplib_login"
ROUTE = "/auth/session"


class CodeIn(BaseModel):
    code: str


def login_token(request: Any) -> str | None:
    """The login cookie of a request (a Gradio or FastAPI one), if any."""
    cookies = getattr(request, "cookies", None) if request is not None else None
    if not cookies:
        return None
    value = cookies.get(COOKIE)
    return value if isinstance(value, str) and value else None


def _https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
    return request.url.scheme == "https" or forwarded == "https"


def router(web: Any) -> APIRouter:
    """The cookie routes for one web app (``web`` is its `webapp.handlers.common.Web`)."""
    routes = APIRouter()
    cookie_path = (web.settings.root_path or "").rstrip("/") or "/"

    @routes.post(ROUTE)
    def start(payload: CodeIn, request: Request) -> JSONResponse:
        try:
            token = web.platform.call(redeem_login_code, code=payload.code)
        except ServiceError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        response = JSONResponse({"ok": True})
        response.set_cookie(
            COOKIE,
            token,
            max_age=int(LOGIN_TTL.total_seconds()),
            path=cookie_path,
            httponly=True,
            samesite="strict",
            secure=_https(request),
        )
        return response

    @routes.delete(ROUTE)
    def end(request: Request) -> JSONResponse:
        try:
            web.platform.call(end_login, token=login_token(request))
        except ServiceError:
            pass  # the cookie goes anyway; an unreachable database must not keep it
        response = JSONResponse({"ok": True})
        response.delete_cookie(
            COOKIE, path=cookie_path, httponly=True, samesite="strict", secure=_https(request)
        )
        return response

    return routes
