"""Conversation: chat, question box, Ask / Cancel / Fork, and the picked answer's details."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import gradio as gr

from webapp.handlers import chat as handlers
from webapp.handlers import sessions as session_handlers
from webapp.handlers.common import Web
from webapp.state import ActorState, ViewState
from webapp.ui import SCREEN, named, outs
from webapp.ui.canvas import fill_after

DETAILS = ("overlay", "legend", "badge", "routing", "downloads", "status")


def build(c: dict[str, Any], web: Web) -> None:
    c["banner"] = gr.Markdown(elem_id="medplib-banner")
    c["chat"] = gr.Chatbot(
        label="Conversation",
        sanitize_html=True,
        height=360,
        elem_id="medplib-chat",
    )
    c["question"] = gr.Textbox(
        label="Question",
        placeholder="e.g. What abnormality is in region 1?  /  Please segment the liver.",
        lines=2,
        max_lines=6,
        max_length=web.settings.max_question_chars,
        elem_id="medplib-question",
    )
    with gr.Row():
        c["ask_btn"] = gr.Button("Ask", variant="primary", elem_id="medplib-ask")
        c["cancel_btn"] = gr.Button("Cancel", visible=False, elem_id="medplib-cancel")
        c["fork_btn"] = gr.Button("Fork", visible=False, elem_id="medplib-fork")
    c["status"] = gr.Markdown(elem_id="medplib-status")
    with gr.Accordion("Answer details", open=True):
        c["turn_pick"] = gr.Dropdown(label="Answer", choices=[], elem_id="medplib-turn")
        c["badge"] = gr.HTML(elem_id="medplib-badge")
        c["overlay"] = gr.Image(
            label="Masks on the image",
            type="numpy",
            format="png",
            interactive=False,
            elem_id="medplib-overlay",
        )
        c["opacity"] = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Mask opacity")
        c["legend"] = gr.HTML(elem_id="medplib-legend")
        c["downloads"] = gr.File(
            label="Masks (PNG and COCO RLE JSON)",
            file_count="multiple",
            interactive=False,
            elem_id="medplib-downloads",
        )
        c["routing"] = gr.Image(
            label="Expert routing per layer",
            type="numpy",
            interactive=False,
            elem_id="medplib-routing",
        )


def follow_after(c: dict[str, Any], web: Web, event: Any) -> Any:
    """After a screen opens a session, poll its newest question if that is still running."""

    async def follow(view: ViewState, actor: ActorState, chat: list) -> AsyncIterator[dict]:
        async for values in handlers.follow(web, view, actor, chat):
            yield named(c, values)

    return event.then(
        follow,
        [c["view"], c["actor"], c["chat"]],
        outs(c, SCREEN, "cancel_btn"),
        concurrency_limit=None,
        show_progress="hidden",
        api_visibility="private",
    )


def wire(c: dict[str, Any], web: Web) -> None:
    async def ask(
        question: str,
        prompter: Any,
        editor: Any,
        view: ViewState,
        actor: ActorState,
        chat: list,
        request: gr.Request,
    ) -> AsyncIterator[dict]:
        async for values in handlers.ask(
            web, question, prompter, editor, view, actor, chat, request.session_hash
        ):
            yield named(c, values)

    inputs = [c["question"], c["prompter"], c["editor"], c["view"], c["actor"], c["chat"]]
    outputs = outs(c, SCREEN, "actor", "cancel_btn")
    # Polling waits on the database, not a GPU: no reason to make askers queue behind each other.
    for trigger in (c["ask_btn"].click, c["question"].submit):
        trigger(
            ask,
            inputs,
            outputs,
            concurrency_limit=None,
            show_progress="hidden",
            api_visibility="private",
        )

    def cancel(view: ViewState, actor: ActorState) -> dict:
        return named(c, handlers.cancel(web, view, actor))

    c["cancel_btn"].click(
        cancel, [c["view"], c["actor"]], outs(c, "status"), api_visibility="private"
    )

    def show(turn: int | None, opacity: float, view: ViewState, actor: ActorState) -> dict:
        return named(c, handlers.show_turn(web, turn, opacity, view, actor))

    detail_inputs = [c["turn_pick"], c["opacity"], c["view"], c["actor"]]
    c["turn_pick"].input(show, detail_inputs, outs(c, DETAILS), api_visibility="private")
    c["opacity"].release(
        show, detail_inputs, outs(c, DETAILS), show_progress="hidden", api_visibility="private"
    )

    def fork(view: ViewState, actor: ActorState) -> dict:
        return named(c, session_handlers.fork_current(web, view, actor))

    fill_after(
        c,
        web,
        c["fork_btn"].click(
            fork,
            [c["view"], c["actor"]],
            outs(c, SCREEN, "sessions_table"),
            api_visibility="private",
        ),
    )
