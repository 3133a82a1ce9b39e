"""`PointBoxPrompter`: click for points, drag for boxes, on an image, in original image pixels.

Its value keeps the contract of the ``gradio_image_prompter`` package that the page used
before, so stored sessions, API clients and handlers read it unchanged::

    {"image": <image>, "points": [[x1, y1, t1, x2, y2, t2], ...]}

    positive point  [x, y, 1, 0, 0, 4]
    negative point  [x, y, 0, 0, 0, 4]
    box             [x0, y0, 2, x1, y1, 3]

Coordinates are floats in the pixels of the image the component holds, whatever size it is
drawn at. The browser side (``prompter.js``) numbers positive prompts from ``first_label`` so
the numbers on the canvas match the region numbers in the chat, and fires ``input`` only on a
user's edit (never when the server sets the value).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio import processing_utils
from gradio.data_classes import FileData
from PIL import Image

HERE = Path(__file__).resolve().parent
# Tallest the canvas is drawn, in CSS pixels: a tall scan fits a laptop screen with the chat.
DEFAULT_MAX_HEIGHT_PX = 460


@cache
def _asset(name: str) -> str:
    return (HERE / name).read_text(encoding="utf-8")


class PointBoxPrompter(gr.HTML):
    """An image with point and box prompts; see the module docstring for the value."""

    def __init__(
        self,
        value: dict[str, Any] | None = None,
        *,
        label: str | None = None,
        first_label: int = 1,
        max_height_px: int = DEFAULT_MAX_HEIGHT_PX,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("html_template", _asset("template.html"))
        kwargs.setdefault("css_template", _asset("prompter.css"))
        kwargs.setdefault("js_on_load", _asset("prompter.js"))
        kwargs.setdefault("apply_default_css", False)
        # Real attributes: Gradio reads each constructor argument back for the page config,
        # and gr.HTML would otherwise answer a name quoted in the script with an event.
        self.first_label = first_label
        self.max_height_px = max_height_px
        super().__init__(
            value=value,
            label=label,
            first_label=first_label,
            max_height_px=max_height_px,
            **kwargs,
        )

    def preprocess(self, payload: Any) -> dict[str, Any] | None:  # type: ignore[override]
        """The browser's value → ``{"image": path or None, "points": rows}``.

        Rows are passed on as sent; the region code checks each one and words the refusal.
        """
        if payload is None or payload == "":  # the HTML frontend sends "" for no value
            return None
        if not isinstance(payload, dict):
            raise gr.Error("The prompter value must be an object with 'image' and 'points'.")
        points = payload.get("points") or []
        if not isinstance(points, list):
            raise gr.Error("The prompter's 'points' must be a list of [x1, y1, t1, x2, y2, t2].")
        image = payload.get("image")
        path = image.get("path") if isinstance(image, dict) else None
        return {"image": path, "points": points}

    def postprocess(self, value: Any) -> dict[str, Any] | None:  # type: ignore[override]
        """``{"image": array | PIL image | path | None, "points": rows}`` → the browser's value."""
        if value is None:
            return None
        if not isinstance(value, dict):
            raise TypeError(f"PointBoxPrompter expects a dict or None, got {type(value).__name__}")
        points = [[float(v) for v in row] for row in value.get("points") or []]
        return {"image": self._image_file(value.get("image")), "points": points}

    def _image_file(self, image: Any) -> dict[str, Any] | None:
        if image is None:
            return None
        if isinstance(image, dict) and image.get("path"):
            return FileData(path=str(image["path"])).model_dump()
        if isinstance(image, str | Path):
            return FileData(path=str(image)).model_dump()
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        if isinstance(image, Image.Image):
            # PNG: lossless, so what is drawn on is exactly what was uploaded.
            path = processing_utils.save_pil_to_cache(image, self.GRADIO_CACHE, format="png")
            return FileData(path=path, mime_type="image/png").model_dump()
        raise TypeError(f"unsupported prompter image: {type(image).__name__}")

    def api_info(self) -> dict[str, Any]:
        row = {"type": "array", "items": {"type": "number"}, "minItems": 6, "maxItems": 6}
        return {
            "type": "object",
            "properties": {
                "image": {"anyOf": [FileData.model_json_schema(), {"type": "null"}]},
                "points": {"type": "array", "items": row},
            },
        }

    def example_payload(self) -> Any:
        return {"image": None, "points": [[10.0, 10.0, 1.0, 0.0, 0.0, 4.0]]}

    def example_value(self) -> Any:
        return {"image": None, "points": [[10.0, 10.0, 1.0, 0.0, 0.0, 4.0]]}
