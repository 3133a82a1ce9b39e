"""Uploading an image: ingest through the service, then reset the screen for a new case."""

from __future__ import annotations

import os
from typing import Any

import gradio as gr

from medplib.errors import UserInputError
from medplib.imageio import detect_format, nifti_file_header
from serving.services.images import original_bytes
from serving.services.uploads import show_image_as, upload_image
from serving.services.validation import volume_choice
from serving.views import ImageData
from webapp import render
from webapp.handlers.common import UserFacingError, Web, uploaded_path, user_errors, warn
from webapp.handlers.screen import EMPTY_CANVASES, blank_details, image_info, view_for_image
from webapp.state import ViewState

# Dropdown value meaning "let the loader choose" (soft tissue for CT, percentiles otherwise).
DEFAULT_WINDOW = "default"
WINDOW_CHOICES = [
    ("default (by modality)", DEFAULT_WINDOW),
    ("soft tissue (W 400, L 40)", "soft_tissue"),
    ("lung (W 1500, L -600)", "lung"),
    ("bone (W 1800, L 400)", "bone"),
    ("auto (1st–99th percentile)", "auto"),
]
AXIS_CHOICES = [("sagittal (0)", 0), ("coronal (1)", 1), ("axial (2)", 2)]


def read_upload(web: Web, path: str) -> bytes:
    path = uploaded_path(path)
    limit = web.settings.max_upload_bytes
    try:
        size = os.path.getsize(path)
        if size > limit:
            raise UserFacingError(
                f"The file is {size / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB."
            )
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        raise UserFacingError(
            "The uploaded file is no longer available; upload it again."
        ) from None


def volume_slices(data: bytes, axis: int) -> int | None:
    """Number of slices along ``axis`` for a NIfTI volume, None for any other file."""
    if detect_format(data) != "nifti":
        return None
    try:
        # From the header alone: decoding happens once, in the ingest, within its limits.
        header = nifti_file_header(data)
    except UserInputError:
        return None  # the ingest reports the problem in full
    if header.ras_shape is None or not 2 <= len(header.shape) <= 4:
        return None
    return int(header.ras_shape[axis])


def upload(
    web: Web,
    path: str | None,
    window: str | None,
    nifti_axis: int | None,
    nifti_slice: float | None,
    view: ViewState,
    drawn: list[dict[str, Any]] | None,
    *,
    new_file: bool,
) -> dict[str, Any]:
    """Ingest the file with the chosen window/slice; on success show it on both canvases.

    ``new_file=False`` re-reads the current image's file (another window or slice). On
    success the file box is emptied, ready for the next upload. On any error the screen
    keeps the previous image and says why, in one sentence.
    """
    source_id: str = view.get("image_id") or ""
    if (new_file and not path) or (not new_file and not source_id):
        return {"status": gr.update()}
    chosen = None if window in (None, DEFAULT_WINDOW) else window
    store = web.platform.store
    # The name is this upload's (the stored image may be shared with other uploaders').
    name = os.path.basename(path or "") if new_file else view.get("filename")
    try:
        with user_errors():
            axis, index = (2, None) if new_file else volume_choice(nifti_axis, nifti_slice)
            if new_file:
                data = read_upload(web, path or "")
            else:  # the stored original: the browser's temporary file may be gone
                data = web.call(original_bytes, store=store, image_id=source_id)
        slices = volume_slices(data, axis)
        if slices is not None and index is not None and index >= slices:
            index = slices - 1  # the axis changed under the slider
        shown_as = {"window": chosen, "nifti_axis": axis, "nifti_slice": index, "filename": name}
        if new_file:
            image = web.call(
                upload_image, store=store, settings=web.settings, data=data, **shown_as
            )
        else:
            image = web.call(
                show_image_as, store=store, settings=web.settings, image_id=source_id, **shown_as
            )
    except UserFacingError as exc:
        warn(str(exc))
        return {"status": f"⚠ {render.escape_text(str(exc))}", "file": None}
    return new_image_screen(web, image, view, drawn, new_file=new_file, slices=slices, index=index)


def new_image_screen(
    web: Web,
    image: ImageData,
    view: ViewState,
    drawn: list[dict[str, Any]] | None,
    *,
    new_file: bool,
    slices: int | None,
    index: int | None,
    what: str = "image",
) -> dict[str, Any]:
    """The screen for a freshly ingested image: both canvases show it, a new case starts.

    `what` names the image in the status line ("image", "synthetic example").
    """
    dropped = len(drawn or [])
    message = f"{what.capitalize()} loaded. Draw regions if you like, then ask a question."
    if not new_file and view.get("session_id"):
        message = (
            "The image is shown with the new window or slice: a new conversation starts on "
            "it (the earlier one stays in My sessions)."
        )
    elif view.get("image_id") or view.get("session_id"):
        message = f"New {what} loaded: a new conversation starts."
        if dropped == 1:
            message += " The region drawn on the previous image was cleared."
        elif dropped:
            message += f" The {dropped} regions drawn on the previous image were cleared."
    out: dict[str, Any] = {
        "view": view_for_image(web, image),
        "file": None,
        **EMPTY_CANVASES,
        "regions_md": render.region_list_markdown([]),
        "drawn": [],
        "sketches": [],
        "image_info": image_info(image),
        "chat": [],
        "turn_pick": gr.update(choices=[], value=None),
        "status": message,
        "banner": "",
        "fork_btn": gr.update(visible=False),
        "ask_btn": gr.update(interactive=True),
        "question": gr.update(interactive=True),
        "nifti_box": gr.update(visible=slices is not None),
        **blank_details(),
    }
    if slices is not None:
        middle = slices // 2 if index is None else index
        out["nifti_slice"] = gr.update(maximum=max(slices - 1, 0), value=middle)
        if new_file:
            out["nifti_axis"] = gr.update(value=2)
    return out
