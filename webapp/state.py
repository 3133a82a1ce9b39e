"""The page's per-tab state, as kept in ``gr.State`` (server-side; never sent to the page).

Two values travel through every handler: who is asking (`ActorState`) and what the main
screen shows (`ViewState`). They stay plain dicts, as Gradio stores them, typed here so a
misspelt key is a type error rather than a ``None`` at run time.
"""

from __future__ import annotations

from typing import Any, TypedDict


class ActorState(TypedDict):
    """Who the tab acts as; ``{}`` until the page has loaded (see `to_actor`)."""

    user_id: str
    role: str  # a `serving.enums.Role` value
    anonymous: bool
    username: str
    # An anonymous browser's secret: what a later login proves this browser with.
    browser_secret: str | None


class ViewState(TypedDict):
    """What the main screen shows: the image, the session and the canvases' geometry."""

    image_id: str | None
    display_key: str | None  # the artefact key of the display copy
    width_px: int  # the original image
    height_px: int
    shown_w: int  # the copy on the canvases (see `webapp.regions.shown_size`)
    shown_h: int
    filename: str | None
    session_id: str | None
    token: str | None  # a share token when the session is read through a link
    read_only: bool
    can_fork: bool
    job_id: str | None  # the job the chat is waiting on
    saved: list[dict[str, Any]]  # regions of a reopened session, as stored (webapp.regions)
