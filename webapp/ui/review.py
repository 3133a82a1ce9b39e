"""Review tab: queue, rating form, agreement and per-checkpoint table, export."""

from __future__ import annotations

from typing import Any

import gradio as gr

from webapp.handlers import review as handlers
from webapp.handlers.common import Web
from webapp.state import ActorState
from webapp.ui import named, outs

VERDICT_NAMES = tuple(f"verdict_{i}" for i in range(handlers.MAX_MASK_VERDICTS))
ITEM = ("review_image", "review_text", "review_badge", "review_status", *VERDICT_NAMES)


def build(c: dict[str, Any]) -> None:
    gr.Markdown(
        "For reviewers (log in on the Account tab). The queue holds answers you have not "
        "rated yet; several reviewers may rate the same answer (see the agreement below)."
    )
    with gr.Row():
        c["review_load"] = gr.Button("Load my queue", variant="primary")
        c["review_pick"] = gr.Dropdown(label="Answer to rate", choices=[], scale=3)
    with gr.Row():
        c["review_image"] = gr.Image(label="Image and masks", type="numpy", interactive=False)
        with gr.Column():
            c["review_badge"] = gr.HTML()
            c["review_text"] = gr.Markdown()
            c["review_score"] = gr.Slider(1, 5, value=3, step=1, label="Answer text (1–5)")
            c["review_correct"] = gr.Radio(
                handlers.CORRECT_CHOICES, value="unsure", label="Is the answer correct?"
            )
            for name in VERDICT_NAMES:
                c[name] = gr.Radio(handlers.VERDICTS, label="mask", visible=False)
            c["review_comment"] = gr.Textbox(label="Comment", lines=2)
            c["review_submit"] = gr.Button("Submit rating", variant="primary")
    c["review_status"] = gr.Markdown()
    with gr.Accordion("Agreement and checkpoints", open=False):
        c["review_stats"] = gr.Button("Compute")
        c["agreement"] = gr.Dataframe(
            headers=handlers.AGREEMENT_HEADERS,
            interactive=False,
            label="Inter-rater agreement (kappa; 1 = full agreement, 0 = chance)",
        )
        c["checkpoint_table"] = gr.Dataframe(
            headers=handlers.CHECKPOINT_HEADERS, interactive=False, label="Per checkpoint"
        )
    with gr.Row():
        c["export_fmt"] = gr.Radio(["csv", "jsonl"], value="csv", label="Export format")
        c["export_btn"] = gr.Button("Export ratings")
    c["export_file"] = gr.File(label="Ratings export", interactive=False)


def wire(c: dict[str, Any], web: Web) -> None:
    def show(turn_id: str, actor: ActorState) -> dict:
        return named(c, handlers.show_item(web, turn_id, actor))

    def load(actor: ActorState) -> dict:
        return named(c, handlers.load_queue(web, actor))

    c["review_load"].click(
        load, [c["actor"]], outs(c, "review_pick", "review_status"), api_visibility="private"
    ).then(show, [c["review_pick"], c["actor"]], outs(c, ITEM), api_visibility="private")

    c["review_pick"].input(
        show, [c["review_pick"], c["actor"]], outs(c, ITEM), api_visibility="private"
    )

    def submit(
        turn_id: str,
        score: float,
        correct: str,
        comment: str,
        actor: ActorState,
        *verdicts: str | None,
    ) -> dict:
        return named(
            c, handlers.submit_rating(web, turn_id, score, correct, comment, list(verdicts), actor)
        )

    form = [
        c["review_pick"],
        c["review_score"],
        c["review_correct"],
        c["review_comment"],
        c["actor"],
        *(c[name] for name in VERDICT_NAMES),
    ]
    c["review_submit"].click(
        submit,
        form,
        outs(c, "review_pick", "review_status", "review_score", "review_correct", "review_comment"),
        api_visibility="private",
    ).then(show, [c["review_pick"], c["actor"]], outs(c, ITEM), api_visibility="private")

    def stats(actor: ActorState) -> dict:
        return named(c, handlers.statistics(web, actor))

    c["review_stats"].click(
        stats,
        [c["actor"]],
        outs(c, "agreement", "checkpoint_table", "review_status"),
        api_visibility="private",
    )

    def export(fmt: str, actor: ActorState) -> dict:
        return named(c, handlers.export(web, fmt, actor))

    c["export_btn"].click(
        export,
        [c["export_fmt"], c["actor"]],
        outs(c, "export_file", "review_status"),
        api_visibility="private",
    )
