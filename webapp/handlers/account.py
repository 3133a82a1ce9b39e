"""Logging in and out; the actor lives in this browser tab's ``gr.State`` only."""

from __future__ import annotations

from typing import Any

from webapp import render
from webapp.handlers.common import (
    UserFacingError,
    Web,
    actor_state,
    anonymous_state,
    to_actor,
)
from webapp.handlers.sessions import account_text, sessions_table
from worker.models import User
from worker.services.sessions import log_in

BAD_LOGIN = "Wrong username or password."


def login(
    web: Web, username: str, password: str, current: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Check the password; the logged-in actor replaces the anonymous one for this tab.

    Sessions this tab made anonymously (``current``) move to the account in the same
    transaction, so nothing done before logging in is left behind.
    """
    before = to_actor(current)

    def body(db: Any) -> tuple[dict[str, Any], int] | None:
        done = log_in(db, username=username or "", password=password or "", before=before)
        if done is None:
            return None
        actor, moved = done
        user = db.get(User, actor.user_id)
        return actor_state(actor, user.username if user else username), moved

    try:
        result = web.call(body)
    except UserFacingError as exc:
        return {"login_status": f"⚠ {render.escape_text(str(exc))}"}
    if result is None:
        return {"login_status": f"⚠ {BAD_LOGIN}", "password": ""}
    state, moved = result
    return {
        "actor": state,
        "password": "",
        "login_status": (
            f"{moved} session{'s' if moved != 1 else ''} from this browser moved to your account."
            if moved
            else ""
        ),
        "account_md": account_text(state),
        "sessions_table": sessions_table(web, state),
    }


def logout(web: Web, browser_key: str | None) -> dict[str, Any]:
    """Back to this browser's anonymous identity."""
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
