"""Share tab (view / fork links, expiry, revoke) and Class tab (an instructor's overview)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from webapp.handlers import share as handlers
from webapp.handlers.common import Web
from webapp.state import ActorState, ViewState
from webapp.ui import SCREEN, named, outs
from webapp.ui.canvas import fill_after
from webapp.ui.chat import follow_after


def build_share(c: dict[str, Any]) -> None:
    gr.Markdown(
        "Share the open session. A **view** link shows it read-only; a **view and fork** link "
        "also lets the holder copy it into their own session. Instructors can make a **class "
        "link**: every student who opens it gets their own copy of this case."
    )
    with gr.Row():
        c["share_role"] = gr.Radio(handlers.ROLE_CHOICES, value="view", label="Access")
        c["share_expiry"] = gr.Dropdown(
            list(handlers.EXPIRY_CHOICES), value="7 days", label="Expires after"
        )
        c["share_class"] = gr.Checkbox(label="Class link (instructors)", value=False)
    c["share_create"] = gr.Button("Create link", variant="primary", elem_id="medplib-share")
    c["share_url"] = gr.Textbox(
        label="Link (shown once)",
        buttons=["copy"],
        interactive=False,
        elem_id="medplib-share-url",
    )
    c["links"] = gr.Dropdown(label="Links of this session", choices=[])
    with gr.Row():
        c["links_refresh"] = gr.Button("Refresh list")
        c["link_revoke"] = gr.Button("Revoke", variant="stop")
    c["share_status"] = gr.Markdown()


def build_class(c: dict[str, Any]) -> None:
    gr.Markdown(
        "For instructors: pick a class link of the open case (Share tab) to see every "
        "student's copy and their latest answer."
    )
    c["class_show"] = gr.Button("Show student copies", variant="primary")
    c["class_table"] = gr.Dataframe(
        headers=handlers.CLASS_HEADERS, interactive=False, wrap=True, elem_id="medplib-class"
    )
    c["class_session"] = gr.Textbox(label="Session id of a student copy")
    c["class_open"] = gr.Button("Open that copy (read-only)")
    c["class_status"] = gr.Markdown()


def wire(c: dict[str, Any], web: Web) -> None:
    def create(
        role: str, expiry: str, klass: bool, view: ViewState, actor: ActorState, request: gr.Request
    ) -> dict:
        base = handlers.base_url_of(request, web.settings.root_path)
        return named(c, handlers.create_link(web, role, expiry, klass, view, actor, base))

    c["share_create"].click(
        create,
        [c["share_role"], c["share_expiry"], c["share_class"], c["view"], c["actor"]],
        outs(c, "share_url", "share_status", "links"),
        api_visibility="private",
    )

    def refresh(view: ViewState, actor: ActorState) -> dict:
        return named(c, handlers.links_list(web, view, actor))

    c["links_refresh"].click(
        refresh, [c["view"], c["actor"]], outs(c, "links", "share_status"), api_visibility="private"
    )

    def revoke(link_id: str, view: ViewState, actor: ActorState) -> dict:
        return named(c, handlers.revoke(web, link_id, view, actor))

    c["link_revoke"].click(
        revoke,
        [c["links"], c["view"], c["actor"]],
        outs(c, "links", "share_status"),
        api_visibility="private",
    )

    def overview(link_id: str, actor: ActorState) -> dict:
        return named(c, handlers.class_overview(web, link_id, actor))

    c["class_show"].click(
        overview,
        [c["links"], c["actor"]],
        outs(c, "class_table", "class_status"),
        api_visibility="private",
    )

    def open_copy(session_id: str, actor: ActorState) -> dict:
        return named(c, handlers.open_fork(web, session_id, actor))

    opened = c["class_open"].click(
        open_copy,
        [c["class_session"], c["actor"]],
        outs(c, SCREEN, "class_status"),
        api_visibility="private",
    )
    follow_after(c, web, fill_after(c, web, opened))
