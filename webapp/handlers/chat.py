"""Asking, following a job until it ends, cancelling, and showing one answer's details."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import gradio as gr

from medplib.errors import UserInputError
from webapp import render
from webapp.adapters import set_session_regions
from webapp.handlers.common import UserFacingError, Web, ensured_state, to_actor, user_errors
from webapp.handlers.screen import (
    blank_details,
    region_lines,
    session_screen,
    turn_details,
)
from webapp.handlers.views import read_session
from webapp.regions import (
    CanvasRegions,
    collect_regions,
    question_for_display,
    resolve_references,
)
from worker.models import JobStatus
from worker.services.sessions import create_session
from worker.services.turns import JobView, cancel_job, job_view

POLL_INTERVAL_S = 0.5


def read_canvases(view: dict[str, Any], prompter: Any, editor: Any) -> CanvasRegions:
    if not view.get("image_id"):
        return CanvasRegions()
    return collect_regions(
        prompter,
        editor,
        original_wh=(view["width_px"], view["height_px"]),
        shown_wh=(view["shown_w"], view["shown_h"]),
    )


def regions_changed(web: Web, prompter: Any, editor: Any, view: dict[str, Any]) -> dict[str, Any]:
    """Re-read both canvases into the numbered region list (kept in the ``drawn`` state)."""
    try:
        found = read_canvases(view, prompter, editor)
    except UserInputError as exc:
        return {"regions_md": render.region_list_markdown([], [str(exc)])}
    return {
        "drawn": found.regions,
        "regions_md": render.region_list_markdown(region_lines(found.regions), found.notes),
    }


def _pending_chat(chat: list[dict[str, Any]], question: str, status: str) -> list[dict[str, Any]]:
    return [
        *chat,
        {"role": "user", "content": render.escape_text(question)},
        {"role": "assistant", "content": f"*{render.escape_text(status)}*"},
    ]


def _status_of(view: JobView) -> str:
    return render.job_status_text(
        view.status.value,
        position=view.position,
        phase=view.phase,
        progress=view.progress,
        error=view.error,
    )


def submit(
    web: Web,
    question: str,
    prompter: Any,
    editor: Any,
    view: dict[str, Any],
    actor_state: dict[str, Any] | None,
    session_hash: str | None,
) -> tuple[JobView, dict[str, Any], dict[str, Any], str, list[dict[str, Any]]]:
    """Validate, create the session on the first question, and queue the job.

    Returns the job view, the new view state, the actor state, the question as shown and
    the regions drawn.
    """
    actor, actor_state = ensured_state(web, actor_state, session_hash)
    if not view.get("image_id"):
        raise UserFacingError("Upload an image first.")
    if view.get("read_only"):
        raise UserFacingError("This session is read-only; fork it to ask your own questions.")
    with user_errors():
        drawn = read_canvases(view, prompter, editor).regions
        resolved = resolve_references(question or "", drawn)
    session_id = view.get("session_id")
    if not session_id:
        session = web.call(
            create_session,
            actor=actor,
            image_id=view["image_id"],
            regions=drawn,
            max_regions=web.settings.max_regions,
        )
        session_id = session.id
    else:
        web.call(
            set_session_regions,
            actor=actor,
            session_id=session_id,
            regions=drawn,
            max_regions=web.settings.max_regions,
        )
    with user_errors():
        job = web.platform.ask(
            actor=actor, session_id=session_id, question=resolved.text, regions=resolved.regions
        )
    shown = question_for_display(resolved.text, resolved.regions)
    new_view = {**view, "session_id": session_id, "job_id": job.id}
    return job, new_view, actor_state, shown, drawn


async def ask(
    web: Web,
    question: str,
    prompter: Any,
    editor: Any,
    view: dict[str, Any],
    actor_state: dict[str, Any] | None,
    chat: list[dict[str, Any]] | None,
    session_hash: str | None,
) -> AsyncIterator[dict[str, Any]]:
    """Queue a question, then yield the job's state about twice a second until it ends."""
    try:
        job, view, actor_state, shown_question, drawn = await asyncio.to_thread(
            submit, web, question, prompter, editor, view, actor_state, session_hash
        )
    except UserFacingError as exc:
        gr.Warning(str(exc))
        yield {"status": f"⚠ {render.escape_text(str(exc))}"}
        return
    history = list(chat or [])
    status = _status_of(job)
    yield {
        "view": view,
        "actor": actor_state,
        "question": "",
        "chat": _pending_chat(history, shown_question, status),
        "status": status,
        "ask_btn": gr.update(interactive=False),
        "cancel_btn": gr.update(visible=True),
    }
    last = status
    while not job.status.final:
        await asyncio.sleep(POLL_INTERVAL_S)
        try:
            job = await asyncio.to_thread(web.call, job_view, job_id=job.id)
        except UserFacingError as exc:  # a database blip: keep polling, say so once
            status = str(exc)
        else:
            status = _status_of(job)
        if status != last:
            last = status
            yield {"chat": _pending_chat(history, shown_question, status), "status": status}
    actor = to_actor(actor_state)
    assert actor is not None
    try:
        session = await asyncio.to_thread(
            web.call, read_session, actor=actor, session_id=view["session_id"]
        )
    except UserFacingError as exc:
        yield {
            "status": str(exc),
            "ask_btn": gr.update(interactive=True),
            "cancel_btn": gr.update(visible=False),
        }
        return
    final = "answered" if job.status is JobStatus.succeeded else _status_of(job)
    out = await asyncio.to_thread(session_screen, web, session, message=final, canvases=False)
    out["view"] = {**out["view"], "job_id": None}
    # The list as the question saw it (an in-flight stroke may have landed after the last
    # change event).
    out["drawn"] = drawn
    out["regions_md"] = render.region_list_markdown(region_lines(drawn))
    out["cancel_btn"] = gr.update(visible=False)
    if job.status is JobStatus.failed:
        gr.Warning(final)
    yield out


def cancel(web: Web, view: dict[str, Any], actor_state: dict[str, Any] | None) -> dict[str, Any]:
    actor = to_actor(actor_state)
    job_id = view.get("job_id")
    if actor is None or not job_id:
        return {"status": "Nothing to cancel."}
    try:
        result = web.call(cancel_job, actor=actor, job_id=job_id)
    except UserFacingError as exc:
        return {"status": str(exc)}
    return {"status": _status_of(result)}


def show_turn(
    web: Web,
    turn_index: int | None,
    opacity: float,
    view: dict[str, Any],
    actor_state: dict[str, Any] | None,
) -> dict[str, Any]:
    """Details of the picked answer at the chosen overlay opacity."""
    actor = to_actor(actor_state)
    if actor is None or turn_index is None or not (view.get("session_id")):
        return blank_details()
    try:
        session = web.call(
            read_session, actor=actor, session_id=view["session_id"], token=view.get("token")
        )
    except UserFacingError as exc:
        return {**blank_details(), "status": str(exc)}
    turn = next((t for t in session.turns if t.index == int(turn_index)), None)
    return turn_details(web, session, turn, opacity=float(opacity))
