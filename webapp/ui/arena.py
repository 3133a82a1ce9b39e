"""Arena tab: two blind answers side by side, four vote buttons, the leaderboard; and the
admins' checkpoint choices."""

from __future__ import annotations

from typing import Any

import gradio as gr

from webapp.handlers import arena as handlers
from webapp.handlers.common import Web
from webapp.state import ActorState, ViewState
from webapp.ui import named, outs

SCREEN = (*handlers.SIDE_OUTPUTS, "arena_status", "arena_reveal", *handlers.VOTE_BUTTONS)
BOARD = ("arena_board", "arena_matrix", "arena_status")
ADMIN = ("arena_admin", "arena_default", "arena_pool", "arena_admin_status")


def mount(c: dict[str, Any], web: Web) -> None:
    """The tab, built and wired in place (inside the page's ``gr.Tabs``)."""
    with gr.Tab("Arena", id="arena") as tab:
        build(c)
    wire(c, web, tab)


def build(c: dict[str, Any]) -> None:
    gr.Markdown(
        "Two checkpoints answer the same question about the image on the Ask tab (with the "
        "regions drawn there), shown as A and B in random order. Vote, then see which was which."
    )
    c["arena_match"] = gr.State(None)  # the match on screen
    c["arena_pending"] = gr.State(None)  # the match just started, to follow; None if refused
    with gr.Row():
        c["arena_question"] = gr.Textbox(
            label="Question", lines=2, scale=4, elem_id="medplib-arena-question"
        )
        c["arena_start"] = gr.Button(
            "Ask both", variant="primary", scale=1, elem_id="medplib-arena-start"
        )
    c["arena_status"] = gr.Markdown(elem_id="medplib-arena-status")
    with gr.Row(equal_height=False):
        for side in ("a", "b"):
            with gr.Column():
                c[f"arena_image_{side}"] = gr.Image(
                    label=side.upper(), type="numpy", interactive=False
                )
                c[f"arena_answer_{side}"] = gr.Markdown(elem_id=f"medplib-arena-answer-{side}")
    with gr.Row():
        for choice, label in handlers.CHOICES.items():
            c[f"arena_vote_{choice}"] = gr.Button(
                label, interactive=False, elem_id=f"medplib-arena-vote-{choice}"
            )
    c["arena_reveal"] = gr.Markdown(elem_id="medplib-arena-reveal")
    with gr.Accordion("Leaderboard", open=True):
        c["arena_refresh"] = gr.Button("Refresh", size="sm")
        c["arena_board"] = gr.Dataframe(
            headers=handlers.BOARD_HEADERS,
            interactive=False,
            label="Bradley–Terry scores (mean 1000) with bootstrap 95 % intervals",
            elem_id="medplib-arena-board",
        )
        c["arena_matrix"] = gr.Dataframe(
            interactive=False, label="Win matrix (ties count half)", elem_id="medplib-arena-matrix"
        )
    with gr.Accordion("Checkpoints (admins)", open=False, visible=False) as admin:
        c["arena_admin"] = admin
        c["arena_default"] = gr.Dropdown(label="Default checkpoint for new questions", choices=[])
        c["arena_pool"] = gr.CheckboxGroup(label="Checkpoints in the arena", choices=[])
        c["arena_save"] = gr.Button("Save checkpoint choices", elem_id="medplib-arena-save")
        c["arena_admin_status"] = gr.Markdown(elem_id="medplib-arena-admin-status")


def wire(c: dict[str, Any], web: Web, tab: gr.Tab) -> None:
    def start(
        question: str, view: ViewState, drawn: list, actor: ActorState, request: gr.Request
    ) -> dict:
        return named(c, handlers.start(web, question, view, drawn, actor, request.session_hash))

    async def follow(match_id: str | None, actor: ActorState) -> Any:
        async for update in handlers.follow(web, match_id, actor):
            yield named(c, update)

    c["arena_start"].click(
        start,
        [c["arena_question"], c["view"], c["drawn"], c["actor"]],
        outs(c, "actor", "arena_match", "arena_pending", SCREEN),
        api_visibility="private",
    ).then(
        follow,
        [c["arena_pending"], c["actor"]],
        outs(c, SCREEN),
        api_visibility="private",
        concurrency_limit=None,  # waits on the model, like the Ask tab's own follow
        show_progress="hidden",
    )

    for choice in handlers.CHOICES:

        def cast(match_id: str | None, actor: ActorState, choice: str = choice) -> dict:
            return named(c, handlers.cast(web, match_id, choice, actor))

        c[f"arena_vote_{choice}"].click(
            cast, [c["arena_match"], c["actor"]], outs(c, SCREEN, BOARD), api_visibility="private"
        )

    def board() -> dict:
        return named(c, handlers.board(web))

    def admin(actor: ActorState) -> dict:
        return named(c, handlers.admin_panel(web, actor))

    c["arena_refresh"].click(board, None, outs(c, BOARD), api_visibility="private")
    tab.select(board, None, outs(c, BOARD), api_visibility="private")
    tab.select(admin, [c["actor"]], outs(c, ADMIN), api_visibility="private")
    # Logging in or out elsewhere on the page shows or hides the admins' accordion.
    c["actor"].change(admin, [c["actor"]], outs(c, ADMIN), api_visibility="private")

    def save(default: str | None, pool: list[str] | None, actor: ActorState) -> dict:
        return named(c, handlers.save_choices(web, default, pool, actor))

    c["arena_save"].click(
        save,
        [c["arena_default"], c["arena_pool"], c["actor"]],
        outs(c, ADMIN),
        api_visibility="private",
    )
