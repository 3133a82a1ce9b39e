"""What every handler shares: the platform, who is asking, and error translation.

Per-browser state lives in two ``gr.State`` values, typed in `webapp.state`: the actor
(`actor_state`) and the view (`empty_view`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
import numpy as np
from PIL import Image as PILImage

from medplib.errors import UserInputError
from serving.enums import Role
from serving.platform import Platform
from serving.services.accounts import Actor, anonymous_identity, new_browser_secret
from serving.services.errors import ServiceError
from serving.services.images import load_display
from serving.services.turns import JobView
from webapp.edge import NO_FETCH, current_address
from webapp.regions import shown_size
from webapp.render import toast_text
from webapp.state import ActorState, ViewState

log = logging.getLogger(__name__)
T = TypeVar("T")

# Size limits of the image copy put on the canvases and overlays. Accuracy does not depend on
# them (prompts are scaled back to original pixels); the height keeps a tall scan on screen.
CANVAS_MAX_WIDTH_PX = 1024
CANVAS_MAX_HEIGHT_PX = 560
# Download files are kept this long for the browser to fetch them, then pruned.
DOWNLOAD_TTL_S = 3600.0


class UserFacingError(gr.Error):
    """A failure whose ``str()`` is one sentence to show as is.

    A `gr.Error`, so one that no handler catches still reaches the page or API client in
    its own words (the app hides every other exception's text).
    """

    def __init__(self, message: str) -> None:
        # The page's pop-up renders ``message`` as HTML; ``str()`` stays the plain sentence
        # (status lines escape it themselves, API clients get it as is).
        super().__init__(toast_text(message), print_exception=False)
        self.text = message

    def __str__(self) -> str:
        return self.text


def warn(message: str) -> None:
    """A warning pop-up on the page, its text shown as typed (see `UserFacingError`)."""
    gr.Warning(toast_text(message))


def uploaded_path(path: str) -> str:
    """`path` if it names a file inside Gradio's upload folder, else `UserFacingError`.

    The edge already refuses other paths in requests; handlers check again so that no
    route (an API client, an event added later) can make the server read its own files.
    """
    from gradio.utils import get_upload_folder

    try:
        real = os.path.realpath(path)
        root = os.path.realpath(get_upload_folder())
    except (OSError, ValueError, TypeError):
        raise UserFacingError(NO_FETCH) from None
    if "://" in str(path) or not real.startswith(root.rstrip(os.sep) + os.sep):
        raise UserFacingError(NO_FETCH)
    return real


def message_of(exc: BaseException) -> str:
    return str(exc).strip() or "That did not work; try again."


@contextmanager
def user_errors() -> Any:
    """Turn service and input errors into `UserFacingError` (one sentence, no traceback)."""
    try:
        yield
    except (ServiceError, UserInputError) as exc:
        raise UserFacingError(message_of(exc)) from None


@dataclass
class Web:
    """The platform plus web-only resources (a scratch directory for downloads)."""

    platform: Platform
    canvas_max_width_px: int = CANVAS_MAX_WIDTH_PX
    canvas_max_height_px: int = CANVAS_MAX_HEIGHT_PX
    scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="medplib-web-")))

    def call(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        with user_errors():
            return self.platform.call(fn, **kwargs)

    def ask(self, **kwargs: Any) -> JobView:
        """`Platform.ask`: the question stored and handed to the runner, refusals in words."""
        with user_errors():
            return self.platform.ask(**kwargs)

    @property
    def settings(self) -> Any:
        return self.platform.settings

    def download_path(self, name: str, data: bytes) -> str:
        """Write bytes for one download under a fresh folder (the name is shown to the user)."""
        self._prune()
        folder = Path(tempfile.mkdtemp(dir=self.scratch))
        path = folder / name
        path.write_bytes(data)
        return str(path)

    def _prune(self) -> None:
        cutoff = time.time() - DOWNLOAD_TTL_S
        for folder in self.scratch.iterdir():
            try:
                if folder.stat().st_mtime < cutoff:
                    for item in folder.iterdir():
                        item.unlink(missing_ok=True)
                    folder.rmdir()
            except OSError:
                continue

    def shown_size(self, width_px: int, height_px: int) -> tuple[int, int]:
        return shown_size(
            width_px,
            height_px,
            max_width_px=self.canvas_max_width_px,
            max_height_px=self.canvas_max_height_px,
        )

    def shown_image(self, display_key: str, width_px: int, height_px: int) -> np.ndarray:
        """The canvas copy of an image: (h, w, 3) uint8, longest side capped."""
        rgb = load_display(self.platform.store, display_key)  # (H, W, 3)
        shown_w, shown_h = self.shown_size(width_px, height_px)
        if (shown_w, shown_h) == (width_px, height_px):
            return rgb
        with PILImage.fromarray(rgb) as im:
            return np.asarray(im.resize((shown_w, shown_h), PILImage.Resampling.BILINEAR))


def actor_state(actor: Actor, username: str, browser_secret: str | None = None) -> ActorState:
    return {
        "user_id": actor.user_id,
        "role": actor.role.value,
        "anonymous": actor.anonymous,
        "username": username,
        "browser_secret": browser_secret if actor.anonymous else None,
    }


def to_actor(state: ActorState | None) -> Actor | None:
    if not state or not state.get("user_id"):
        return None
    return Actor(
        user_id=state["user_id"], role=Role(state["role"]), anonymous=bool(state["anonymous"])
    )


# Keyed per process: a connection's secret cannot be worked out from its session hash.
_CONNECTION_KEY = secrets.token_bytes(32)


def connection_secret(session_hash: str | None) -> str:
    """The anonymous secret of a client that keeps none (API clients, blocked storage).

    The same for every call of one connection (so calls that do not keep the state still
    act as one user), random to everyone else.
    """
    if not session_hash:
        return new_browser_secret()
    return hmac.new(_CONNECTION_KEY, session_hash.encode(), hashlib.sha256).hexdigest()[:32]


def anonymous_state(web: Web, browser_secret: str) -> ActorState:
    # A new anonymous user counts against the address of the request being handled.
    address = current_address(web.settings.trusted_proxy_networks)

    who = web.call(
        anonymous_identity,
        browser_secret=browser_secret,
        address=address,
        new_per_address_per_minute=web.settings.anon_users_per_address_per_minute,
    )
    return actor_state(who.actor, who.name, browser_secret)


def ensured_state(
    web: Web, state: ActorState | None, session_hash: str | None
) -> tuple[Actor, ActorState]:
    """The state's actor, or a fresh anonymous one when the page never loaded (API clients).

    Returns the actor and the state dict to put back into ``gr.State``.
    """
    actor = to_actor(state)
    if actor is not None and state is not None:
        return actor, state
    fresh = anonymous_state(web, connection_secret(session_hash))
    actor = to_actor(fresh)
    assert actor is not None
    return actor, fresh


# View state: what the main screen currently shows.


def empty_view() -> ViewState:
    return {
        "image_id": None,
        "display_key": None,
        "width_px": 0,
        "height_px": 0,
        "shown_w": 0,
        "shown_h": 0,
        "filename": None,
        "session_id": None,
        "token": None,
        "read_only": False,
        "can_fork": False,
        "job_id": None,
        "saved": [],
    }
