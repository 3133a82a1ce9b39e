"""Page load (who is this browser, which link was opened), "My sessions", open and delete."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import gradio as gr

from webapp import render
from webapp.handlers.common import (
    UserFacingError,
    Web,
    anonymous_state,
    key_from_session_hash,
    to_actor,
)
from webapp.handlers.screen import session_screen
from webapp.handlers.views import link_kind, read_session
from worker.models import LinkKind
from worker.services.sessions import delete_session, list_sessions
from worker.services.shares import fork_session

SESSION_HEADERS = ["title", "answers", "updated (UTC)", "id"]


def sessions_table(web: Web, actor_state: dict[str, Any] | None) -> list[list[Any]]:
    actor = to_actor(actor_state)
    if actor is None:
        return []
    rows = web.call(list_sessions, actor=actor)
    return [[s.title, s.turns, f"{s.updated_at:%Y-%m-%d %H:%M}", s.id] for s in rows]


def _valid_key(key: str | None) -> bool:
    return bool(key) and 16 <= len(key or "") <= 64 and (key or "").isalnum()


def page_load(
    web: Web, browser_key: str | None, query: str | None, session_hash: str | None
) -> dict[str, Any]:
    """Identify the browser (its stored key, else this page's own) and open a linked session.

    ``query`` is the page's query string: ``?share=TOKEN`` opens a read-only view (or the
    student's own copy, for a class link); ``?class=TOKEN`` always opens the student copy.
    """
    key = browser_key if _valid_key(browser_key) else key_from_session_hash(session_hash)
    try:
        state = anonymous_state(web, key)
    except UserFacingError as exc:
        return {"status": f"⚠ {render.escape_text(str(exc))}", "browser_key": key}
    out: dict[str, Any] = {"actor": state, "browser_key": key}
    params = parse_qs((query or "").lstrip("?"))
    share = (params.get("share") or [""])[0]
    klass = (params.get("class") or [""])[0]
    if share or klass:
        out.update(open_link(web, state, share or klass, as_class=bool(klass)))
    out["account_md"] = account_text(state)
    out["sessions_table"] = sessions_table(web, state)
    return out


def account_text(state: dict[str, Any] | None) -> str:
    if not state:
        return "Not signed in."
    if state.get("anonymous"):
        return (
            "You are using MedPLIB anonymously; your sessions are kept for this browser. "
            "Instructors, reviewers and admins: log in below."
        )
    return (
        f"Logged in as **{render.escape_text(state.get('username'))}** "
        f"({render.escape_text(state.get('role'))})."
    )


def open_link(
    web: Web, actor_state: dict[str, Any], token: str, *, as_class: bool = False
) -> dict[str, Any]:
    actor = to_actor(actor_state)
    assert actor is not None
    try:
        kind = web.call(link_kind, token=token)
        if as_class or kind is LinkKind.klass:
            if kind is not LinkKind.klass:
                raise UserFacingError("This is not a class link; open it with ?share= instead.")
            fork = web.call(fork_session, actor=actor, token=token)
            session = web.call(read_session, actor=actor, session_id=fork.id)
            out = session_screen(web, session, message="Your own copy of the class case.")
        else:
            session = web.call(read_session, actor=actor, token=token)
            out = session_screen(web, session, message="Opened a shared session.")
            out["view"]["token"] = token
    except UserFacingError as exc:
        gr.Warning(str(exc))
        return {"status": f"⚠ {render.escape_text(str(exc))}"}
    return out


def fork_current(web: Web, view: dict[str, Any], actor_state: dict[str, Any] | None) -> dict:
    actor = to_actor(actor_state)
    token = view.get("token")
    if actor is None or not token:
        return {"status": "There is no shared session to fork."}
    try:
        fork = web.call(fork_session, actor=actor, token=token)
        session = web.call(read_session, actor=actor, session_id=fork.id)
    except UserFacingError as exc:
        gr.Warning(str(exc))
        return {"status": f"⚠ {render.escape_text(str(exc))}"}
    out = session_screen(web, session, message="Forked: this copy is yours; ask away.")
    out["sessions_table"] = sessions_table(web, actor_state)
    return out


def open_session(
    web: Web, session_id: str | None, actor_state: dict[str, Any] | None
) -> dict[str, Any]:
    actor = to_actor(actor_state)
    if actor is None or not session_id:
        return {"status": "Pick a session in the list first."}
    try:
        session = web.call(read_session, actor=actor, session_id=session_id.strip())
    except UserFacingError as exc:
        gr.Warning(str(exc))
        return {"status": f"⚠ {render.escape_text(str(exc))}"}
    return session_screen(web, session, message=f"Opened “{render.escape_text(session.title)}”.")


def remove_session(
    web: Web, session_id: str | None, view: dict[str, Any], actor_state: dict[str, Any] | None
) -> dict[str, Any]:
    """Delete a session (owners their own, admins any); clear the screen if it was open."""
    actor = to_actor(actor_state)
    if actor is None or not session_id:
        return {"sessions_status": "Pick a session first."}
    try:
        web.call(delete_session, actor=actor, session_id=session_id.strip())
    except UserFacingError as exc:
        return {"sessions_status": f"⚠ {render.escape_text(str(exc))}"}
    out: dict[str, Any] = {
        "sessions_status": "Session deleted.",
        "sessions_table": sessions_table(web, actor_state),
    }
    if view.get("session_id") == session_id.strip():
        out["view"] = {**view, "session_id": None, "job_id": None}
        out["chat"] = []
    return out
