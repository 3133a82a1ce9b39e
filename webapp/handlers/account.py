"""Logging in and out. The actor lives in the tab's ``gr.State``; a login also gets a
one-time code that the page trades for the login cookie (see `webapp.auth`), so a reload
finds the login again."""

from __future__ import annotations

from typing import Any

from serving.services.logins import end_login, page_login
from webapp import render
from webapp.handlers.common import (
    UserFacingError,
    Web,
    actor_state,
    anonymous_state,
)
from webapp.handlers.sessions import account_text, sessions_table
from webapp.state import ActorState

BAD_LOGIN = "Wrong username or password."


def login(
    web: Web, username: str, password: str, current: ActorState | None = None
) -> dict[str, Any]:
    """Check the password; the logged-in actor replaces the anonymous one for this tab.

    Sessions this browser made anonymously move to the account in the same transaction;
    what selects them is the browser's secret, kept server-side in ``current``.
    """
    try:
        done = web.call(
            page_login,
            username=username or "",
            password=password or "",
            anonymous_secret=current.get("browser_secret") if current else None,
        )
    except UserFacingError as exc:
        return {"login_status": f"⚠ {render.escape_text(str(exc))}"}
    if done is None:
        return {"login_status": f"⚠ {BAD_LOGIN}", "password": ""}
    state, moved = actor_state(done.identity.actor, done.identity.name), done.moved
    return {
        "actor": state,
        "password": "",
        "login_code": done.code,
        "login_status": (
            f"{moved} session{'s' if moved != 1 else ''} from this browser moved to your account."
            if moved
            else ""
        ),
        "account_md": account_text(state),
        "sessions_table": sessions_table(web, state),
    }


def logout(web: Web, browser_key: str | None, login_token: str | None = None) -> dict[str, Any]:
    """Back to this browser's anonymous identity; the login cookie's login ends for good."""
    try:
        web.call(end_login, token=login_token)
    except UserFacingError as exc:
        return {"login_status": f"⚠ {render.escape_text(str(exc))}"}
    if not browser_key:
        return {"actor": {}, "account_md": account_text(None), "sessions_table": []}
    try:
        state = anonymous_state(web, browser_key)
    except UserFacingError as exc:
        return {"login_status": f"⚠ {render.escape_text(str(exc))}"}
    return {
        "actor": state,
        "login_status": "Logged out.",
        "account_md": account_text(state),
        "sessions_table": sessions_table(web, state),
    }
