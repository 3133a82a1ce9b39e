"""Examples on the Ask page: a synthetic scene loaded as an upload, its question filled in.

Loading resets the canvases like any new image (`webapp.ui.canvas.fill_after`); the second
step, `canvases`, fills them and, for a question about a region, draws that region as box 1.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from serving.services.examples import example_box_xyxy_px, example_case, example_png
from serving.services.uploads import upload_image
from webapp import render
from webapp.handlers.chat import regions_changed
from webapp.handlers.common import UserFacingError, Web, user_errors, warn
from webapp.handlers.screen import canvas_values
from webapp.handlers.upload import new_image_screen
from webapp.state import ViewState

# Prompter row type codes of a dragged box: [x1, y1, 2, x2, y2, 3] (webapp.widgets).
_BOX_START, _BOX_END = 2.0, 3.0


def load(web: Web, index: int, view: ViewState, drawn: list[dict[str, Any]] | None) -> dict:
    """Ingest example `index`'s PNG as an upload would, and put its question in the box."""
    case = example_case(index)
    try:
        with user_errors():
            image = web.call(
                upload_image,
                store=web.platform.store,
                settings=web.settings,
                data=example_png(index),
                filename=case.filename,
            )
    except UserFacingError as exc:
        warn(str(exc))
        return {"status": f"⚠ {render.escape_text(str(exc))}"}
    out = new_image_screen(
        web, image, view, drawn, new_file=True, slices=None, index=None, what="synthetic example"
    )
    out["question"] = gr.update(value=case.question, interactive=True)
    return out


def canvases(web: Web, index: int, view: ViewState, prompter: Any) -> dict[str, Any]:
    """Both canvases for the loaded example; its region, if it has one, drawn as box 1.

    `prompter` is the canvas value after `load`: None once it was reset (the load worked);
    anything else means the load failed and the canvases are left as they are.
    """
    if prompter is not None or not view.get("display_key"):
        return {"prompter": gr.update(), "editor": gr.update()}
    filled = canvas_values(web, view)
    box = example_box_xyxy_px(index)
    if box is None:
        return filled
    # Prompter rows are in the shown copy's pixels, the box in the image's.
    sx = view["shown_w"] / view["width_px"]
    sy = view["shown_h"] / view["height_px"]
    x0, y0, x1, y1 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
    value = {**filled["prompter"]["value"], "points": [[x0, y0, _BOX_START, x1, y1, _BOX_END]]}
    out = {"prompter": gr.update(value=value, first_label=1), "editor": filled["editor"]}
    return {**out, **regions_changed(web, value, None, view, [])}
