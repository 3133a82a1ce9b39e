"""Review tab: queue, rating form, mask correction, agreement and per-checkpoint table, export."""

from __future__ import annotations

from typing import Any

import gradio as gr

from webapp.handlers import review as handlers
from webapp.handlers import review_export
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
        c["review_load"] = gr.Button(
            "Load my queue", variant="primary", elem_id="medplib-review-load"
        )
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
    c["review_status"] = gr.Markdown(elem_id="medplib-review-status")
    with gr.Accordion("Correct a mask", open=False):
        with gr.Row():
            c["correction_mask"] = gr.Number(
                value=1, minimum=1, precision=0, label="Mask number", scale=1
            )
            c["correction_open"] = gr.Button(
                "Open in the editor", scale=1, elem_id="medplib-correction-open"
            )
            c["correction_save"] = gr.Button(
                "Save correction", variant="primary", scale=1, elem_id="medplib-correction-save"
            )
        with gr.Row():
            c["correction_mode"] = gr.Radio(
                handlers.CORRECTION_MODES,
                value=handlers.CORRECTION_MODES[0],
                label="Strokes",
                elem_id="medplib-correction-mode",
                scale=3,
            )
            c["correction_fill"] = gr.Checkbox(
                value=False,
                label="Fill: a closed stroke counts with its inside",
                elem_id="medplib-correction-fill",
                scale=1,
            )
        c["correction_editor"] = gr.ImageEditor(
            label="The mask is tinted in; paint strokes (undo and eraser are in the toolbar)",
            type="numpy",
            sources=(),
            transforms=(),
            brush=gr.Brush(colors=["#ff4040"], color_mode="fixed", default_size=8),
            eraser=gr.Eraser(default_size=12),
            layers=True,  # without, the editor has no layer to paint on
            format="png",
            elem_id="medplib-correction-editor",
        )
        c["correction_status"] = gr.Markdown(elem_id="medplib-correction-status")
        c["correction_versions"] = gr.Markdown(elem_id="medplib-correction-versions")
    with gr.Accordion("Agreement and checkpoints", open=False):
        c["review_stats"] = gr.Button("Compute", elem_id="medplib-review-stats")
        c["agreement"] = gr.Dataframe(
            headers=handlers.AGREEMENT_HEADERS,
            interactive=False,
            label="Inter-rater agreement (kappa; 1 = full agreement, 0 = chance)",
        )
        c["mask_agreement"] = gr.Dataframe(
            headers=handlers.MASK_AGREEMENT_HEADERS,
            interactive=False,
            label="Corrected masks: agreement between reviewers (latest versions; 1 = identical)",
            elem_id="medplib-mask-agreement",
        )
        c["verdict_signals"] = gr.Dataframe(
            headers=handlers.VERDICT_SIGNAL_HEADERS,
            interactive=False,
            label="Mask verdicts against the model's own numbers (does it know when it is wrong?)",
            elem_id="medplib-verdict-signals",
        )
        c["checkpoint_table"] = gr.Dataframe(
            headers=handlers.CHECKPOINT_HEADERS, interactive=False, label="Per checkpoint"
        )
    with gr.Row():
        c["export_fmt"] = gr.Radio(["csv", "jsonl"], value="csv", label="Export format")
        c["export_btn"] = gr.Button("Export ratings")
    c["export_file"] = gr.File(label="Ratings export", interactive=False)
    with gr.Accordion("Export reviewed answers as training data", open=False):
        gr.Markdown(
            "Corrected and accepted answers as a MeCoVQA corpus (a zip with images, masks, "
            "records and a data card naming the reviewers) for `medplib train`."
        )
        with gr.Row():
            c["dataset_class"] = gr.Textbox(label="Class link id (empty: all)", scale=2)
            c["dataset_since"] = gr.Textbox(label="Since (YYYY-MM-DD, empty: all)", scale=1)
            c["dataset_min_rating"] = gr.Number(
                value=None, minimum=0, maximum=5, precision=0, label="Minimum text score", scale=1
            )
        c["dataset_btn"] = gr.Button("Export dataset", elem_id="medplib-dataset-export")
        c["dataset_status"] = gr.Markdown(elem_id="medplib-dataset-status")
        c["dataset_file"] = gr.File(label="Corpus (zip)", interactive=False)


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
        outs(
            c, "agreement", "mask_agreement", "verdict_signals", "checkpoint_table", "review_status"
        ),
        api_visibility="private",
    )

    def open_correction(turn_id: str, number: float, actor: ActorState) -> dict:
        return named(c, handlers.open_correction(web, turn_id, number, actor))

    def save_correction(
        turn_id: str, number: float, mode: str, fill: bool, editor: Any, actor: ActorState
    ) -> dict:
        return named(
            c, handlers.save_correction(web, turn_id, number, mode, editor, actor, fill=fill)
        )

    correction = ("correction_editor", "correction_versions", "correction_status")
    c["correction_open"].click(
        open_correction,
        [c["review_pick"], c["correction_mask"], c["actor"]],
        outs(c, *correction),
        api_visibility="private",
    )
    c["correction_save"].click(
        save_correction,
        [
            c["review_pick"],
            c["correction_mask"],
            c["correction_mode"],
            c["correction_fill"],
            c["correction_editor"],
            c["actor"],
        ],
        outs(c, *correction),
        api_visibility="private",
    )

    def export_dataset(class_id: str, since: str, rating: float, actor: ActorState) -> dict:
        return named(c, review_export.export(web, class_id, since, rating, actor))

    c["dataset_btn"].click(
        export_dataset,
        [c["dataset_class"], c["dataset_since"], c["dataset_min_rating"], c["actor"]],
        outs(c, "dataset_file", "dataset_status"),
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
