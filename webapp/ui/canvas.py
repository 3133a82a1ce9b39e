"""The two drawing canvases (points/boxes, free-form sketch) and the numbered region list."""

from __future__ import annotations

from typing import Any

import gradio as gr
from gradio_image_prompter import ImagePrompter

from webapp.handlers import chat as handlers
from webapp.handlers.common import Web
from webapp.render import region_list_markdown
from webapp.ui import named, outs

CANVAS_HEIGHT_PX = 460


def build(c: dict[str, Any]) -> None:
    with gr.Tabs():
        with gr.Tab("Points and boxes", id="prompter-tab"):
            c["prompter"] = ImagePrompter(
                label="Click for a point, drag for a box (several allowed)",
                sources=[],
                interactive=True,
                show_download_button=False,
                elem_id="medplib-prompter",
            )
            # The shown copy is PNG: lossless, so what is drawn on is what was uploaded.
            c["prompter"].format = "png"
        with gr.Tab("Sketch", id="sketch-tab"):
            c["editor"] = gr.ImageEditor(
                label="Paint a free-form region; each layer is one region",
                type="numpy",
                sources=(),
                transforms=(),
                brush=gr.Brush(colors=["#ff4040"], color_mode="fixed", default_size=12),
                eraser=gr.Eraser(default_size=16),
                layers=True,
                format="png",
                height=CANVAS_HEIGHT_PX,
                elem_id="medplib-editor",
            )
    c["regions_md"] = gr.Markdown(region_list_markdown([]), elem_id="medplib-regions")


def wire(c: dict[str, Any], web: Web) -> None:
    def changed(prompter: Any, editor: Any, view: dict) -> dict:
        return named(c, handlers.regions_changed(web, prompter, editor, view))

    inputs = [c["prompter"], c["editor"], c["view"]]
    outputs = outs(c, "drawn", "regions_md")
    for component in (c["prompter"], c["editor"]):
        component.change(
            changed,
            inputs,
            outputs,
            trigger_mode="always_last",
            show_progress="hidden",
            show_api=False,
        )
