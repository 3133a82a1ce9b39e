"""The page: tabs composed from `webapp.ui` modules, plus the page-load event."""

from __future__ import annotations

from typing import Any

import gradio as gr

from webapp import auth
from webapp.handlers import sessions as session_handlers
from webapp.handlers import share as share_handlers
from webapp.handlers.common import Web, empty_view
from webapp.state import ActorState, ViewState
from webapp.ui import (
    SCREEN,
    account,
    api,
    arena,
    canvas,
    chat,
    named,
    outs,
    review,
    sessions,
    share,
    upload,
)

TITLE = "MedPLIB: ask about medical images, point at regions, get masks"
NOTICE = (
    "Research preview, **not for clinical use**. Images and conversations are stored on this "
    "server; do not upload identifiable patient data."
)
# Runs in the browser before the load handler: a random secret kept in localStorage is this
# browser's anonymous credential across reloads (a per-page one when storage is blocked).
# It is never shown; the server keeps only its hash.
LOAD_JS = (
    """
(key, query) => {
"""
    + canvas.REFRESH_JS
    + """
  let stored = null;
  try { stored = window.localStorage.getItem("medplib_browser_key"); } catch (e) {}
  if (!stored || !/^[0-9a-f]{32}$/.test(stored)) {
    const bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    stored = Array.from(bytes, b => b.toString(16).padStart(2, "0")).join("");
    try { window.localStorage.setItem("medplib_browser_key", stored); } catch (e) {}
  }
  return [stored, window.location.search];
}
"""
)
# Page-wide styles, passed to `launch()` (Gradio 6 takes theme, css and js there).
CSS = """
.medplib-hidden { display: none !important; }
#medplib-status p { margin: 0.2em 0; }
.medplib-legend li { margin: 0.1em 0; }
"""


def build_blocks(web: Web) -> gr.Blocks:
    c: dict[str, Any] = {}
    with gr.Blocks(title="MedPLIB", delete_cache=(3600, 3600)) as demo:
        c["actor"] = gr.State({})
        c["view"] = gr.State(empty_view())
        c["drawn"] = gr.State([])  # every region, numbered, as last read off the canvases
        c["sketches"] = gr.State([])  # the sketch editor's regions at its last change
        c["browser_key"] = gr.State("")
        key_box = gr.Textbox(visible=False)
        query_box = gr.Textbox(visible=False)
        # First, so the API endpoints get their plain names (/ask, not /ask_1).
        api.build_and_wire(c, web)
        gr.Markdown(f"## {TITLE}\n{NOTICE}")
        with gr.Tabs():
            with gr.Tab("Ask", id="ask"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1):
                        upload.build(c)
                        canvas.build(c)
                    with gr.Column(scale=1):
                        chat.build(c, web)
            with gr.Tab("My sessions", id="sessions"):
                sessions.build(c)
            with gr.Tab("Share", id="share") as share_tab:
                share.build_share(c)
            with gr.Tab("Class", id="class") as class_tab:
                share.build_class(c)
            with gr.Tab("Review", id="review"):
                review.build(c)
            arena.mount(c, web)
            with gr.Tab("Account", id="account"):
                account.build(c)
        for module in (upload, canvas, chat, sessions, share, review, account):
            module.wire(c, web)

        def on_load(key: str, query: str, request: gr.Request) -> dict:
            return named(
                c,
                session_handlers.page_load(
                    web, key, query, request.session_hash, auth.login_token(request)
                ),
            )

        loaded = demo.load(
            on_load,
            [key_box, query_box],
            outs(c, SCREEN, "actor", "browser_key", "account_md", "sessions_table"),
            js=LOAD_JS,
            api_visibility="private",
        )
        chat.follow_after(c, web, canvas.fill_after(c, web, loaded))

        def remember(view: ViewState, actor: ActorState) -> None:
            session_handlers.remember_view(web, view, actor)

        # Whatever put a session on screen, a reload reopens it.
        c["view"].change(
            remember,
            [c["view"], c["actor"]],
            None,
            api_visibility="private",
            queue=False,
            show_progress="hidden",
            trigger_mode="always_last",
        )

        def links(view: ViewState, actor: ActorState) -> dict:
            return named(c, share_handlers.links_list(web, view, actor))

        for tab in (share_tab, class_tab):
            tab.select(
                links,
                [c["view"], c["actor"]],
                outs(c, "links", "share_status"),
                api_visibility="private",
            )
    # Mounted next to Gradio's routes by `webapp.commands.launch` (Gradio events cannot set
    # cookies).
    demo.medplib_router = auth.router(web)  # type: ignore[attr-defined]
    return demo
