"""Upload panel: any supported file, DICOM window, NIfTI axis and slice."""

from __future__ import annotations

from typing import Any

import gradio as gr

from serving.services.examples import EXAMPLES
from webapp.handlers import examples as example_handlers
from webapp.handlers import upload as handlers
from webapp.handlers.common import Web
from webapp.state import ViewState
from webapp.ui import SCREEN, named, outs
from webapp.ui.canvas import fill_after

UPLOAD_OUTPUTS = (*SCREEN, "file", "nifti_box", "nifti_axis", "nifti_slice")


def build(c: dict[str, Any]) -> None:
    c["file"] = gr.File(
        label="Image: PNG, JPEG, TIFF, BMP, DICOM (.dcm) or NIfTI (.nii, .nii.gz)",
        type="filepath",
        file_count="single",
        elem_id="medplib-upload",
    )
    c["window"] = gr.Dropdown(
        choices=handlers.WINDOW_CHOICES,
        value=handlers.DEFAULT_WINDOW,
        label="Window (DICOM / NIfTI)",
        elem_id="medplib-window",
    )
    with gr.Group(visible=False) as c["nifti_box"]:
        c["nifti_axis"] = gr.Radio(choices=handlers.AXIS_CHOICES, value=2, label="Slice axis")
        c["nifti_slice"] = gr.Slider(minimum=0, maximum=1, step=1, value=0, label="Slice")
    c["image_info"] = gr.Markdown(elem_id="medplib-image-info")
    with gr.Group(elem_id="medplib-examples"):
        gr.Markdown("No image at hand? Try a synthetic example (drawn here, not a patient's):")
        with gr.Row():
            for i, case in enumerate(EXAMPLES):
                c[f"example_{i}"] = gr.Button(
                    case.label, size="sm", variant="secondary", elem_id=f"medplib-example-{i}"
                )


def wire(c: dict[str, Any], web: Web) -> None:
    inputs = [c["file"], c["window"], c["nifti_axis"], c["nifti_slice"], c["view"], c["drawn"]]

    def new_file(
        path: str | None, window: str, axis: int, index: float, view: ViewState, drawn: list
    ) -> dict:
        return named(
            c,
            handlers.upload(web, path, window, axis, index, view, drawn, new_file=True),
        )

    def same_file(
        path: str | None, window: str, axis: int, index: float, view: ViewState, drawn: list
    ) -> dict:
        return named(
            c,
            handlers.upload(web, path, window, axis, index, view, drawn, new_file=False),
        )

    outputs = outs(c, UPLOAD_OUTPUTS)
    options = {"show_progress": "minimal", "api_visibility": "private"}
    fill_after(c, web, c["file"].upload(new_file, inputs, outputs, **options))
    # `input` / `release` fire on user action only, not when a handler sets the value.
    fill_after(c, web, c["window"].input(same_file, inputs, outputs, **options))
    fill_after(c, web, c["nifti_axis"].input(same_file, inputs, outputs, **options))
    fill_after(c, web, c["nifti_slice"].release(same_file, inputs, outputs, **options))

    def example_steps(index: int):
        def load(view: ViewState, drawn: list) -> dict:
            return named(c, example_handlers.load(web, index, view, drawn))

        def fill(view: ViewState, prompter: Any) -> dict:
            return named(c, example_handlers.canvases(web, index, view, prompter))

        return load, fill

    # Loading resets the canvases as an upload does; the second step fills them (with the
    # example's region, where it asks about one).
    filled = outs(c, "prompter", "editor", "drawn", "sketches", "regions_md")
    for i in range(len(EXAMPLES)):
        load, fill = example_steps(i)
        c[f"example_{i}"].click(load, [c["view"], c["drawn"]], outputs, **options).then(
            fill, [c["view"], c["prompter"]], filled, api_visibility="private"
        )
