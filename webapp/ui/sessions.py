""" "My sessions": the list, open, delete (owners their own; admins any id)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from webapp.handlers import sessions as handlers
from webapp.handlers.common import Web
from webapp.state import ActorState, ViewState
from webapp.ui import SCREEN, named, outs
from webapp.ui.canvas import fill_after
from webapp.ui.chat import follow_after


def build(c: dict[str, Any]) -> None:
    gr.Markdown("Every conversation is saved. Pick one (click its row) to reopen it.")
    c["sessions_table"] = gr.Dataframe(
        headers=handlers.SESSION_HEADERS,
        datatype=["str", "number", "str", "str"],
        interactive=False,
        wrap=True,
        elem_id="medplib-sessions",
    )
    c["session_id"] = gr.Textbox(label="Session id", elem_id="medplib-session-id")
    with gr.Row():
        c["refresh_sessions"] = gr.Button("Refresh")
        c["open_session"] = gr.Button("Open", variant="primary", elem_id="medplib-open")
        c["delete_session"] = gr.Button("Delete", variant="stop")
    c["sessions_status"] = gr.Markdown()


def wire(c: dict[str, Any], web: Web) -> None:
    def refresh(actor: ActorState) -> list:
        return handlers.sessions_table(web, actor)

    c["refresh_sessions"].click(
        refresh, [c["actor"]], c["sessions_table"], api_visibility="private"
    )

    def pick(evt: gr.SelectData, table: Any) -> str:
        # The id is the last column of the clicked row.
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        try:
            return str(table.values[row][-1])
        except (AttributeError, IndexError):
            return ""

    c["sessions_table"].select(
        pick, [c["sessions_table"]], c["session_id"], api_visibility="private"
    )

    def open_(session_id: str, actor: ActorState) -> dict:
        return named(c, handlers.open_session(web, session_id, actor))

    opened = c["open_session"].click(
        open_, [c["session_id"], c["actor"]], outs(c, SCREEN), api_visibility="private"
    )
    follow_after(c, web, fill_after(c, web, opened))

    def delete(session_id: str, view: ViewState, actor: ActorState) -> dict:
        return named(c, handlers.remove_session(web, session_id, view, actor))

    c["delete_session"].click(
        delete,
        [c["session_id"], c["view"], c["actor"]],
        outs(c, "sessions_status", "sessions_table", "view", "chat"),
        api_visibility="private",
    )
