"""Fixtures for the web app: a migrated SQLite platform with a predictor that draws masks."""

from __future__ import annotations

import io
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alembic import command
from PIL import Image

from serving.migrate import alembic_config
from serving.models import Role
from serving.platform import Platform, build_platform
from serving.predictors import EchoMask, PredictorHolder
from serving.services.accounts import create_user
from serving.settings import Settings
from webapp.handlers.common import Web


@dataclass
class Routing:
    """The predictor's routing record (see `medplib.predictor.RoutingStats.to_dict`)."""

    shares: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": list(range(len(self.shares))),
            "num_experts": 2,
            "prompt_share": [[g, 1.0 - g] for g in self.shares],
            "prompt_image_share": [[g, 1.0 - g] for g in self.shares],
            "prompt_text_share": [[g / 2, 1.0 - g / 2] for g in self.shares],
            "answer_share": [[1.0 - g, g] for g in self.shares],
            "answer_experts": [],
        }


@dataclass
class Prediction:
    answer: str
    raw_answer: str
    masks: list[Any]
    routing: Any = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def quarter_mask(h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[: h // 2, : w // 2] = True
    return mask


class FakePredictor:
    """Answers at once with a fixed mask (default: the top-left quarter) plus each region.

    ``answer`` is returned verbatim so tests can send markup through the whole stack.
    """

    checkpoint_id = "tiny-untrained-test"

    def __init__(
        self,
        answer: str | None = None,
        delay_s: float = 0.0,
        mask_fn: Callable[[int, int], np.ndarray] = quarter_mask,
        raw_answer: str | None = None,
    ) -> None:
        self.answer = answer
        self.raw_answer = raw_answer  # None: the question (any text without <SEG>)
        self.delay_s = delay_s
        self.mask_fn = mask_fn
        self.shape: tuple[int, int] = (0, 0)

    def set_image(self, image: np.ndarray) -> None:
        self.shape = image.shape[:2]

    def ask(
        self,
        question: str,
        regions: Sequence[np.ndarray] = (),
        history=(),
        *,
        progress=None,
        on_text=None,
    ):
        if progress is not None:
            progress("decoding", 0.5)
        answer = self.answer if self.answer is not None else f"answer to: {question}"
        words = answer.split(" ")
        for n in range(1, len(words) + 1):  # streamed a word at a time across the delay
            if self.delay_s:
                time.sleep(self.delay_s / len(words))
            if on_text is not None:
                on_text(" ".join(words[:n]))
        # The model's mask passed a mirror check; echoed regions have none.
        masks = [EchoMask(mask=self.mask_fn(*self.shape), score=0.75, mirror_agreement=0.92)]
        masks += [EchoMask(mask=np.asarray(r, dtype=bool)) for r in regions]
        return Prediction(
            answer=answer,
            raw_answer=self.raw_answer if self.raw_answer is not None else question,
            masks=masks,
            routing=Routing([0.2, 0.6, 0.9]),
        )


def migrate(url: str) -> None:
    command.upgrade(alembic_config(url), "head")


def png_bytes(width: int = 60, height: int = 40, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def write_png(path, width: int = 60, height: int = 40, seed: int = 0) -> str:
    path.write_bytes(png_bytes(width, height, seed))
    return str(path)


def phantom_png(path, width: int = 320, height: int = 256) -> str:
    """A CT-like slice: body, two dark lungs, a bright spine and a lesion at (0.68w, 0.42h)."""
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]

    def ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0

    grey = np.full((height, width), 10.0)
    grey[ellipse(0.5, 0.5, 0.45, 0.4)] = 120
    grey[ellipse(0.33, 0.45, 0.12, 0.22)] = 35
    grey[ellipse(0.67, 0.45, 0.12, 0.22)] = 35
    grey[ellipse(0.5, 0.78, 0.05, 0.06)] = 235
    grey[ellipse(0.68, 0.42, 0.035, 0.045)] = 170
    noise = np.random.default_rng(0).normal(0, 6, grey.shape)
    pixels = np.clip(grey + noise, 0, 255).astype(np.uint8)
    Image.fromarray(np.dstack([pixels] * 3)).save(path)
    return str(path)


def lesion_mask(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx - 0.68 * w) / (0.05 * w)) ** 2 + ((yy - 0.42 * h) / (0.065 * h)) ** 2 <= 1.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def live_server(
    root: Path,
    predictor: Callable[[], Any] = FakePredictor,
    *,
    holders: dict[str, PredictorHolder] | None = None,
    **overrides: Any,
) -> Iterator[str]:
    """A migrated database, the platform and the web app on a free port; yields its URL.

    `holders` gives named checkpoints (`overrides` then names them in `checkpoints`) their
    own predictors instead of the one `predictor`."""
    from webapp.commands import create_app, launch

    url = f"sqlite:///{root / 'medplib.db'}"
    migrate(url)
    settings = Settings(
        database_url=url, artefact_dir=root / "artefacts", port=free_port(), **overrides
    )
    if holders is not None:
        platform = build_platform(settings, holders=holders)
    else:
        platform = build_platform(settings, holder=PredictorHolder(predictor))
    platform.call(
        lambda db: create_user(db, username="rita", password="a long password", role=Role.reviewer)
    )
    demo, platform = create_app(settings, platform)
    platform.runner.start()
    launch(demo, settings, prevent_thread_lock=True)
    try:
        yield f"http://127.0.0.1:{settings.port}/"
    finally:
        demo.close()
        platform.runner.stop()


@pytest.fixture
def make_platform(tmp_path) -> Iterator[Callable[..., Platform]]:
    made: list[Platform] = []

    def make(*, predictor: Any = None, start_runner: bool = True, **overrides: Any) -> Platform:
        url = f"sqlite:///{tmp_path / 'medplib.db'}"
        migrate(url)
        settings = Settings(database_url=url, artefact_dir=tmp_path / "artefacts", **overrides)
        holder = PredictorHolder(lambda: predictor or FakePredictor())
        platform = build_platform(settings, holder=holder)
        if start_runner:  # off: the test starts it, e.g. to see a job while it is still queued
            platform.runner.start()
        made.append(platform)
        return platform

    yield make
    for platform in made:
        platform.runner.stop()


@pytest.fixture
def web(make_platform) -> Web:
    return Web(make_platform())


# Browser tests (test_browser_*.py): Debian's Chromium driven by Playwright.
CHROMIUM = "/usr/bin/chromium"
BROWSER_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def chromium():
    """Headless Chromium; skipped when missing, except under CI=true (then a failure)."""
    problem = None
    if not Path(CHROMIUM).exists():
        problem = f"Chromium is not installed at {CHROMIUM}"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "playwright is not installed"
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem} (CI=true: browser tests must run)")
        pytest.skip(problem)
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def browser_server(tmp_path_factory) -> Iterator[str]:
    """The web app with a predictor that answers with a lesion mask, for browser tests."""

    def predictor() -> FakePredictor:
        # A short delay so the queued / running states are visible on the page.
        return FakePredictor(delay_s=0.6, mask_fn=lesion_mask)

    with live_server(tmp_path_factory.mktemp("browser"), predictor) as address:
        yield address


@pytest.fixture
def page(chromium, browser_server):
    """A fresh browser context (so a fresh anonymous user) on the loaded page."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(BROWSER_TIMEOUT_MS)
    page.goto(browser_server)
    page.wait_for_selector("#medplib-upload input[type=file]", state="attached")
    yield page
    context.close()
