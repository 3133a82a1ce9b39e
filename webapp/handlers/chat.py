"""Asking, following a job until it ends, cancelling, and showing one answer's details."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import gradio as gr

from medplib.errors import UserInputError
from serving.enums import JobStatus
from serving.job_events import changed_within
from serving.services.reading import read_session
from serving.services.turns import JobView, cancel_job, job_view
from webapp import render
from webapp.handlers.common import UserFacingError, Web, ensured_state, to_actor, user_errors, warn
from webapp.handlers.screen import (
    EMPTY_CANVASES,
    blank_details,
    canvas_values,
    region_lines,
    session_screen,
    turn_details,
)
from webapp.regions import (
    CanvasRegions,
    collect_regions,
    question_for_display,
    relabel,
    resolve_references,
)
from webapp.state import ActorState, ViewState

# Reading the database while notices are missing (the Redis relay is down).
POLL_INTERVAL_S = 0.5
# With notices flowing, a safety re-read in case one was lost.
FALLBACK_S = 5.0


def read_canvases(
    view: ViewState, prompter: Any, editor: Any, *, with_saved: bool = True
) -> CanvasRegions:
    if not view.get("image_id"):
        return CanvasRegions()
    return collect_regions(
        prompter,
        editor,
        original_wh=(view["width_px"], view["height_px"]),
        shown_wh=(view["shown_w"], view["shown_h"]),
        saved=(view.get("saved") or []) if with_saved else (),
    )


def regions_changed(
    web: Web,
    prompter: Any,
    editor: Any,
    view: ViewState,
    sketches: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Re-read the canvases into the numbered region list (kept in the ``drawn`` state).

    The sketch editor's value is costly to send (whole images), so a prompter refresh passes
    ``editor=None`` and the ``sketches`` read at the editor's last change instead.
    """
    try:
        if editor is not None or sketches is None:
            sketches = read_canvases(view, None, editor, with_saved=False).regions
        found = read_canvases(view, prompter, None)
    except UserInputError as exc:
        return {"regions_md": render.region_list_markdown([], [str(exc)])}
    regions = relabel(found.regions + list(sketches))
    return {
        "drawn": regions,
        "sketches": sketches,
        "regions_md": render.region_list_markdown(
            region_lines(regions, len(view.get("saved") or [])), found.notes
        ),
    }


def _pending_chat(
    chat: list[dict[str, Any]], question: str, status: str, text: str | None = None
) -> list[dict[str, Any]]:
    return [
        *chat,
        {"role": "user", "content": render.escape_text(question)},
        _pending(status, text),
    ]


def _pending(status: str, text: str | None) -> dict[str, Any]:
    """The answer's place in the chat: its status, or the text so far while it streams."""
    if text:
        return {"role": "assistant", "content": f"{render.escape_text(text)} ▍"}
    return {"role": "assistant", "content": f"*{render.escape_text(status)}*"}


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
    view: ViewState,
    actor_state: ActorState | None,
    session_hash: str | None,
) -> tuple[JobView, ViewState, ActorState, str, list[dict[str, Any]]]:
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
        saved = len(view.get("saved") or [])
        resolved = resolve_references(question or "", drawn, implicit_from=saved + 1)

    job = web.ask(
        actor=actor,
        session_id=view.get("session_id"),
        image_id=view["image_id"],
        filename=view.get("filename"),
        question=resolved.text,
        regions=resolved.regions,
        drawn=drawn,
    )
    shown = question_for_display(resolved.text, resolved.regions)
    # What was drawn is stored with the session now: it becomes saved, keeping its numbers.
    new_view: ViewState = {**view, "session_id": job.session_id, "job_id": job.id, "saved": drawn}
    return job, new_view, actor_state, shown, drawn


async def ask(
    web: Web,
    question: str,
    prompter: Any,
    editor: Any,
    view: ViewState,
    actor_state: ActorState | None,
    chat: list[dict[str, Any]] | None,
    session_hash: str | None,
) -> AsyncIterator[dict[str, Any]]:
    """Queue a question, then yield the job's state about twice a second until it ends."""
    try:
        job, view, actor_state, shown_question, drawn = await asyncio.to_thread(
            submit, web, question, prompter, editor, view, actor_state, session_hash
        )
    except UserFacingError as exc:
        warn(str(exc))
        yield {"status": f"⚠ {render.escape_text(str(exc))}"}
        return
    history = list(chat or [])

    def pending(status: str, text: str | None = None) -> list[dict[str, Any]]:
        return _pending_chat(history, shown_question, status, text)

    status = _status_of(job)
    yield {
        "view": view,
        "actor": actor_state,
        "question": "",
        "chat": pending(status),
        "status": status,
        "ask_btn": gr.update(interactive=False),
        "cancel_btn": gr.update(visible=True),
        # The canvases start over from the image with every region saved and burnt in, so
        # nothing sent is drawn twice and new prompts are numbered after the saved ones.
        **canvas_values(web, view),
        "sketches": [],
        "drawn": drawn,
        "regions_md": render.region_list_markdown(region_lines(drawn, len(drawn))),
    }
    async for update in _watch(web, job, pending):
        if isinstance(update, JobView):
            job = update
        else:
            yield update
    # The final screen leaves the canvases and the region list alone: prompts drawn while
    # the answer was coming are new regions, already listed by the canvas's own events.
    yield await _final_screen(web, job, view, actor_state)


async def follow(
    web: Web,
    view: ViewState,
    actor_state: ActorState | None,
    chat: list[dict[str, Any]] | None,
) -> AsyncIterator[dict[str, Any]]:
    """Keep a reopened screen up to date while its newest question is queued or running.

    A reload, a reopened session or a shared link would otherwise show "queued" for good.
    """
    job_id = view.get("job_id")
    if not job_id or to_actor(actor_state) is None:
        yield {"status": gr.update()}  # nothing to follow (gradio wants at least one output)
        return
    try:
        job = await asyncio.to_thread(web.call, job_view, job_id=job_id)
    except UserFacingError as exc:
        yield {"status": str(exc)}
        return
    earlier = list(chat or [])[:-1]  # the last message is the pending answer's status

    def pending(status: str, text: str | None = None) -> list[dict[str, Any]]:
        return [*earlier, _pending(status, text)]

    if not job.status.final:
        status = _status_of(job)
        yield {
            "chat": pending(status),
            "status": status,
            "ask_btn": gr.update(interactive=False),
            "cancel_btn": gr.update(visible=not view.get("read_only")),
        }
        async for update in _watch(web, job, pending):
            if isinstance(update, JobView):
                job = update
            else:
                yield update
    yield await _final_screen(web, job, view, actor_state)


async def _watch(web: Web, job: JobView, pending: Any) -> AsyncIterator[dict[str, Any] | JobView]:
    """Follow a job to its end: a screen update per change or streamed text, then the final job.

    Notices wake the loop (from the embedded runner, or relayed from the workers); the job is
    read from the database only when a notice says it changed. Without notices (the relay is
    down) it is read every ``POLL_INTERVAL_S``, and the page says answers come without text.
    """
    events = web.platform.events
    shown: tuple[str, str | None] = (_status_of(job), None)
    status = shown[0]
    # Notices sent before the subscription below reach nobody (a fast runner can claim the
    # job and report progress in that gap), so the job is read again once subscribed.
    seen_state, reread = events.state(job.id), True
    async with events.subscribe(job.id) as changed:
        while True:
            state = events.state(job.id)
            if reread or state != seen_state:
                seen_state = state
                try:
                    job = await asyncio.to_thread(web.call, job_view, job_id=job.id)
                except UserFacingError as exc:  # a database blip: keep following, say so
                    status = str(exc)
                else:
                    if job.status.final:
                        break  # the final screen shows the outcome
                    status = _status_of(job)
            if not events.live:
                status = f"{status} (live updates paused; the answer appears when stored)"
            text = events.text(job.id) if events.live else None
            if (status, text) != shown:
                shown = (status, text)
                yield {"chat": pending(status, text), "status": status}
            woke = await changed_within(changed, FALLBACK_S if events.live else POLL_INTERVAL_S)
            reread = not woke
    yield job


async def _final_screen(
    web: Web, job: JobView, view: ViewState, actor_state: ActorState | None
) -> dict[str, Any]:
    """The session as the finished job left it; the drawings on the canvases stay."""
    actor = to_actor(actor_state)
    assert actor is not None
    idle = {
        "ask_btn": gr.update(interactive=not view.get("read_only")),
        "cancel_btn": gr.update(visible=False),
    }
    try:
        session = await asyncio.to_thread(
            web.call,
            read_session,
            actor=actor,
            session_id=view["session_id"],
            token=view.get("token") if view.get("read_only") else None,
        )
    except UserFacingError as exc:
        return {"status": str(exc), **idle}
    final = "answered" if job.status is JobStatus.succeeded else _status_of(job)
    out = await asyncio.to_thread(session_screen, web, session, message=final, canvases=False)
    out["view"] = {**out["view"], "job_id": None}
    out["cancel_btn"] = gr.update(visible=False)
    if job.status is JobStatus.failed:
        warn(final)
    return out


def cancel(web: Web, view: ViewState, actor_state: ActorState | None) -> dict[str, Any]:
    actor = to_actor(actor_state)
    job_id = view.get("job_id")
    if actor is None or not job_id:
        return {"status": "Nothing to cancel."}
    try:
        result = web.call(cancel_job, actor=actor, job_id=job_id)
    except UserFacingError as exc:
        return {"status": str(exc)}
    web.platform.events.publish(job_id)  # the page following this job says so at once
    return {"status": _status_of(result)}


def show_turn(
    web: Web,
    turn_index: int | None,
    opacity: float,
    view: ViewState,
    actor_state: ActorState | None,
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


def clear_saved(web: Web, view: ViewState) -> dict[str, Any]:
    """Drop the regions restored with a session (the next question saves what is drawn)."""
    if not view.get("saved"):
        return {"status": "There are no saved regions to clear."}
    return {
        "view": {**view, "saved": []},
        **EMPTY_CANVASES,
        "drawn": [],
        "sketches": [],
        "regions_md": render.region_list_markdown([]),
        "status": "Saved regions cleared.",
    }
