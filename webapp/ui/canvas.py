"""The two drawing canvases (points/boxes, free-form sketch) and the numbered region list."""

from __future__ import annotations

from typing import Any

import gradio as gr

from webapp.components.prompter import PointBoxPrompter
from webapp.handlers import chat as handlers
from webapp.handlers import screen
from webapp.handlers.common import Web
from webapp.render import region_list_markdown
from webapp.state import ViewState
from webapp.ui import named, outs

CANVAS_HEIGHT_PX = 460
# Installed once per page (see webapp.app.LOAD_JS): after a stroke on the sketch canvas (or its
# own undo / clear / layer buttons), ask the server to re-read it. The editor's value is whole
# images, so it is read on release rather than on each of its many change events.
REFRESH_JS = """
  const refresh = (event) => {
    if (!event.target.closest || !event.target.closest("#medplib-editor")) return;
    window.setTimeout(() => {
      const button = document.getElementById("medplib-refresh-sketches");
      if (button) button.click();
    }, 150);
  };
  document.addEventListener("pointerup", refresh, true);
"""


def build(c: dict[str, Any]) -> None:
    with gr.Tabs():
        with gr.Tab("Points and boxes", id="prompter-tab"):
            c["prompter"] = PointBoxPrompter(
                label="Click for a point, drag for a box (several allowed)",
                max_height_px=CANVAS_HEIGHT_PX,
                elem_id="medplib-prompter",
            )
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
    c["clear_saved"] = gr.Button("Clear saved regions", size="sm", elem_id="medplib-clear-saved")
    c["refresh_sketches"] = gr.Button(
        "refresh sketches", elem_id="medplib-refresh-sketches", elem_classes=["medplib-hidden"]
    )


def fill_after(c: dict[str, Any], web: Web, event: Any) -> Any:
    """Chain the second step of a canvas reset: the handler emptied them, this fills them."""

    def fill(view: ViewState, prompter: Any) -> dict:
        # Handlers that failed left the canvases (and the user's prompts) alone.
        if prompter is not None:
            return named(c, {"prompter": gr.update(), "editor": gr.update()})
        return named(c, screen.canvas_values(web, view))

    return event.then(
        fill, [c["view"], c["prompter"]], outs(c, "prompter", "editor"), api_visibility="private"
    )


def wire(c: dict[str, Any], web: Web) -> None:
    def sketched(prompter: Any, editor: Any, view: ViewState) -> dict:
        return named(c, handlers.regions_changed(web, prompter, editor, view))

    def prompted(prompter: Any, sketches: list, view: ViewState) -> dict:
        return named(c, handlers.regions_changed(web, prompter, None, view, sketches))

    def clear_saved(view: ViewState) -> dict:
        return named(c, handlers.clear_saved(web, view))

    fill_after(
        c,
        web,
        c["clear_saved"].click(
            clear_saved,
            [c["view"]],
            outs(c, "view", "prompter", "editor", "drawn", "regions_md", "status"),
            api_visibility="private",
        ),
    )

    outputs = outs(c, "drawn", "sketches", "regions_md")
    # One queue for both region events, one at a time: a slow sketch read finishing after a
    # quick prompt read would otherwise show a stale list. Each takes milliseconds.
    options = {
        "trigger_mode": "always_last",
        "show_progress": "hidden",
        "api_visibility": "private",
        "concurrency_id": "regions",
        "concurrency_limit": 1,
    }
    # REFRESH_JS clicks this hidden button after each stroke on the sketch canvas.
    c["refresh_sketches"].click(
        sketched, [c["prompter"], c["editor"], c["view"]], outputs, **options
    )
    # The prompter fires "input" on a user's edit only, so its region list follows every
    # point, box, deletion and undo without re-sending the sketch layers.
    c["prompter"].input(prompted, [c["prompter"], c["sketches"], c["view"]], outputs, **options)
