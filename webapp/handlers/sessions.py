"""Page load (who is this browser, which link was opened), "My sessions", open and delete."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from serving.enums import LinkKind
from serving.services.accounts import valid_browser_secret
from serving.services.logins import login_identity
from serving.services.reading import link_kind, read_session
from serving.services.sessions import (
    delete_session,
    last_session_id,
    list_sessions,
    remember_session,
)
from serving.services.shares import fork_session
from webapp import render
from webapp.handlers.common import (
    UserFacingError,
    Web,
    actor_state,
    anonymous_state,
    connection_secret,
    to_actor,
    warn,
)
from webapp.handlers.screen import session_screen
from webapp.state import ActorState, ViewState

SESSION_HEADERS = ["title", "answers", "updated (UTC)", "id"]


def sessions_table(web: Web, actor_state: ActorState | None) -> list[list[Any]]:
    actor = to_actor(actor_state)
    if actor is None:
        return []
    rows = web.call(list_sessions, actor=actor)
    return [[s.title, s.turns, f"{s.updated_at:%Y-%m-%d %H:%M}", s.id] for s in rows]


def _login_state(web: Web, login_token: str | None) -> ActorState | None:
    """The account a login cookie stands for, as actor state; None without a live login."""
    if not login_token:
        return None
    who = web.call(login_identity, token=login_token)
    return None if who is None else actor_state(who.actor, who.name)


def page_load(
    web: Web,
    browser_key: str | None,
    query: str | None,
    session_hash: str | None,
    login_token: str | None = None,
) -> dict[str, Any]:
    """Identify the browser and open what it should show.

    Who: the account of a live login cookie, else the anonymous user of the browser's stored
    secret (else of this page alone). What: ``?share=TOKEN`` opens a read-only view (or the
    student's own copy, for a class link), ``?class=TOKEN`` always the student copy;
    otherwise the session this user last had on screen.
    """
    key = browser_key if valid_browser_secret(browser_key) else connection_secret(session_hash)
    assert key is not None
    try:
        state = _login_state(web, login_token) or anonymous_state(web, key)
    except UserFacingError as exc:
        return {"status": f"⚠ {render.escape_text(str(exc))}", "browser_key": key}
    out: dict[str, Any] = {"actor": state, "browser_key": key}
    params = parse_qs((query or "").lstrip("?"))
    share = (params.get("share") or [""])[0]
    klass = (params.get("class") or [""])[0]
    if share or klass:
        out.update(open_link(web, state, share or klass, as_class=bool(klass)))
    else:
        out.update(reopen_last(web, state))
    out["account_md"] = account_text(state)
    out["sessions_table"] = sessions_table(web, state)
    return out


def reopen_last(web: Web, actor_state: ActorState) -> dict[str, Any]:
    """The screen of the session this user last had open, or nothing when there is none."""
    actor = to_actor(actor_state)
    if actor is None:
        return {}
    try:
        session_id = web.call(last_session_id, actor=actor)
        if session_id is None:
            return {}
        session = web.call(read_session, actor=actor, session_id=session_id)
    except UserFacingError:
        return {}  # gone since: start on an empty screen
    return session_screen(web, session, message=f"Reopened “{render.escape_text(session.title)}”.")


def remember_view(web: Web, view: ViewState, actor_state: ActorState | None) -> None:
    """Note the session on screen as the one to reopen on a reload."""
    actor = to_actor(actor_state)
    # A session read through a link is not the user's to come back to; an empty screen
    # (a new upload, say) keeps the last real session.
    if actor is None or view.get("token") or not view.get("session_id"):
        return
    try:
        web.call(remember_session, actor=actor, session_id=view.get("session_id"))
    except UserFacingError:
        pass  # best effort: a reload then opens an older session


def account_text(state: ActorState | None) -> str:
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
    web: Web, actor_state: ActorState, token: str, *, as_class: bool = False
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
        warn(str(exc))
        return {"status": f"⚠ {render.escape_text(str(exc))}"}
    return out


def fork_current(web: Web, view: ViewState, actor_state: ActorState | None) -> dict:
    actor = to_actor(actor_state)
    token = view.get("token")
    if actor is None or not token:
        return {"status": "There is no shared session to fork."}
    try:
        fork = web.call(fork_session, actor=actor, token=token)
        session = web.call(read_session, actor=actor, session_id=fork.id)
    except UserFacingError as exc:
        warn(str(exc))
        return {"status": f"⚠ {render.escape_text(str(exc))}"}
    out = session_screen(web, session, message="Forked: this copy is yours; ask away.")
    out["sessions_table"] = sessions_table(web, actor_state)
    return out


def open_session(
    web: Web, session_id: str | None, actor_state: ActorState | None
) -> dict[str, Any]:
    actor = to_actor(actor_state)
    if actor is None or not session_id:
        return {"status": "Pick a session in the list first."}
    try:
        session = web.call(read_session, actor=actor, session_id=session_id.strip())
    except UserFacingError as exc:
        warn(str(exc))
        return {"status": f"⚠ {render.escape_text(str(exc))}"}
    return session_screen(web, session, message=f"Opened “{render.escape_text(session.title)}”.")


def remove_session(
    web: Web, session_id: str | None, view: ViewState, actor_state: ActorState | None
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
