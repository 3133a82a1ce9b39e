"""Share links (view / fork), class links, revocation and an instructor's class overview."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import gradio as gr

from serving.enums import LinkKind, LinkRole
from serving.services.reading import read_session
from serving.services.shares import ClassFork, class_forks, list_links, revoke_link, share_session
from serving.views import LinkData
from webapp import render
from webapp.handlers.common import UserFacingError, Web, to_actor
from webapp.handlers.screen import session_screen
from webapp.regions import question_for_display
from webapp.state import ActorState, ViewState

# Expiry choices shown in the UI: label -> hours (None never expires).
EXPIRY_CHOICES: dict[str, float | None] = {
    "1 hour": 1,
    "1 day": 24,
    "7 days": 24 * 7,
    "30 days": 24 * 30,
    "never": None,
}
ROLE_CHOICES = [("view only", "view"), ("view and fork", "fork")]


def share_url(base_url: str, token: str, *, kind: str = "session") -> str:
    key = "class" if kind == LinkKind.klass.value else "share"
    return f"{base_url.rstrip('/')}/?{urlencode({key: token})}"


def base_url_of(request: Any, root_path: str = "") -> str:
    """The address the browser used, honouring a reverse proxy's forwarded headers."""
    headers = getattr(request, "headers", None) or {}
    host = headers.get("x-forwarded-host") or headers.get("host") or "127.0.0.1:7860"
    proto = headers.get("x-forwarded-proto") or "http"
    return f"{proto}://{host}{root_path}"


def _link_row(link: LinkData) -> tuple[str, str]:
    expiry = f"expires {link.expires_at:%Y-%m-%d %H:%M}" if link.expires_at else "no expiry"
    state = "revoked" if link.revoked_at else expiry
    kind = "class link" if link.kind is LinkKind.klass else f"{link.role.value} link"
    return f"{kind}, made {link.created_at:%Y-%m-%d %H:%M}, {state}", link.id


def expires_in(choice: str | None) -> timedelta | None:
    hours = EXPIRY_CHOICES.get(choice or "7 days", 24 * 7)
    return None if hours is None else timedelta(hours=hours)


def create_link(
    web: Web,
    role: str,
    expiry: str,
    as_class: bool,
    view: ViewState,
    actor_state: ActorState | None,
    base_url: str,
) -> dict[str, Any]:
    actor = to_actor(actor_state)
    session_id = view.get("session_id")
    if actor is None or not session_id or view.get("read_only"):
        return {"share_status": "Ask a question first: only your own saved sessions can be shared."}
    kind = LinkKind.klass if as_class else LinkKind.session

    try:
        made = web.call(
            share_session,
            actor=actor,
            session_id=session_id,
            role=LinkRole(role),
            kind=kind,
            expires_in=expires_in(expiry),
        )
    except UserFacingError as exc:
        return {"share_status": f"⚠ {render.escape_text(str(exc))}"}
    url = share_url(base_url, made.token, kind=made.link.kind.value)
    what = "Class link" if kind is LinkKind.klass else "Link"
    return {
        "share_url": url,
        "share_status": f"{what} created. Copy it now: it is shown only once.",
        **links_list(web, view, actor_state),
    }


def links_list(web: Web, view: ViewState, actor_state: ActorState | None) -> dict:
    actor = to_actor(actor_state)
    session_id = view.get("session_id")
    if actor is None or not session_id or view.get("read_only"):
        return {"links": gr.update(choices=[], value=None)}
    try:
        links = web.call(list_links, actor=actor, session_id=session_id)
    except UserFacingError as exc:
        return {"share_status": f"⚠ {render.escape_text(str(exc))}"}
    rows = [_link_row(link) for link in links]
    return {"links": gr.update(choices=rows, value=rows[0][1] if rows else None)}


def revoke(
    web: Web, link_id: str | None, view: ViewState, actor_state: ActorState | None
) -> dict[str, Any]:
    actor = to_actor(actor_state)
    if actor is None or not link_id:
        return {"share_status": "Pick a link to revoke."}
    try:
        web.call(revoke_link, actor=actor, link_id=link_id)
    except UserFacingError as exc:
        return {"share_status": f"⚠ {render.escape_text(str(exc))}"}
    return {
        "share_status": "Link revoked: it stops working now.",
        **links_list(web, view, actor_state),
    }


CLASS_HEADERS = ["student", "answers", "last question", "last answer", "session id"]


def class_overview(web: Web, link_id: str | None, actor_state: ActorState | None) -> dict[str, Any]:
    """Each student's fork of a class link: who, how many answers, the latest exchange."""
    actor = to_actor(actor_state)
    if actor is None or not link_id:
        return {"class_status": "Pick a class link first."}

    try:
        forks = web.call(class_forks, actor=actor, link_id=link_id)
    except UserFacingError as exc:
        return {"class_status": f"⚠ {render.escape_text(str(exc))}"}
    rows = [_class_row(fork) for fork in forks]
    return {"class_table": rows, "class_status": f"{len(rows)} student copies."}


def _class_row(fork: ClassFork) -> list[Any]:
    last = fork.last
    return [
        fork.student,
        fork.answers,
        question_for_display(last.question, last.regions) if last else "",
        (last.answer_with_marks or "") if last else "",
        fork.id,
    ]


def open_fork(web: Web, session_id: str | None, actor_state: ActorState | None) -> dict[str, Any]:
    """An instructor reads one student's copy (read-only: it is the student's session)."""
    actor = to_actor(actor_state)
    if actor is None or not session_id:
        return {"class_status": "Pick a student copy (its session id) first."}
    try:
        session = web.call(read_session, actor=actor, session_id=session_id.strip())
    except UserFacingError as exc:
        return {"class_status": f"⚠ {render.escape_text(str(exc))}"}
    return session_screen(web, session, message="A student's copy, read-only.")
