"""Helpers for the headless-Chromium tests (their fixtures are in conftest.py)."""

from __future__ import annotations

import io
import re
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def wait_for_text(page, selector: str, pattern: str) -> None:
    """Wait until the element's text matches the regular expression `pattern`.

    The element may not be rendered yet: a predicate that threw on it would fail the wait at
    once instead of retrying."""
    page.wait_for_function(
        "([sel, p]) => new RegExp(p).test(document.querySelector(sel)?.innerText ?? '')",
        arg=[selector, pattern],
    )


def open_accordion(page, title: str, inside: str, *, tries: int = 3) -> None:
    """Open the accordion named `title` until `inside` (a selector within it) is visible.

    A click that lands while the page is still applying an earlier update can be lost; then
    the accordion stays shut and is clicked again (a click on an open one would shut it, so
    only after the inner element has had time to appear)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    header = page.get_by_text(title, exact=True)
    for _ in range(tries - 1):
        header.click()
        try:
            page.wait_for_selector(inside, state="visible", timeout=10_000)
            return
        except PlaywrightTimeout:
            continue
    header.click()
    page.wait_for_selector(inside, state="visible")


def upload(page, path: str) -> dict:
    page.set_input_files("#medplib-upload input[type=file]", path)
    # The old canvas goes in the same update that names the new file; then the new one comes.
    wait_for_text(page, "#medplib-image-info", re.escape(Path(path).name))
    return prompter_box(page)


# The prompter's drawing surface: an SVG laid over the image once the image has loaded.
PROMPTER_SURFACE = "#medplib-prompter svg.mp-overlay"


def prompter_box(page) -> dict:
    """The drawing surface's box on the page, once the shown image has loaded and is sized."""
    page.wait_for_function(
        """(sel) => {
          const svg = document.querySelector(sel);
          const img = svg && svg.parentElement.querySelector("img.mp-image");
          return img && img.complete && img.naturalWidth > 0 && svg.style.display === "block"
            && Math.abs(svg.getBoundingClientRect().width - img.getBoundingClientRect().width) < 0.5;
        }""",
        arg=PROMPTER_SURFACE,
    )
    surface = page.locator(PROMPTER_SURFACE).first
    surface.scroll_into_view_if_needed()
    return surface.bounding_box()


def regions_text(page, pattern: str) -> str:
    wait_for_text(page, "#medplib-regions", pattern)
    return page.inner_text("#medplib-regions")


def numbers(text: str, kind: str) -> list[float]:
    match = re.search(kind + r" \(([\d.]+), ([\d.]+)\)(?:–\(([\d.]+), ([\d.]+)\))?", text)
    assert match, text
    return [float(v) for v in match.groups() if v is not None]


def drag(page, box: dict, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(box["x"] + start[0], box["y"] + start[1])
    page.mouse.down()
    page.mouse.move(box["x"] + end[0], box["y"] + end[1], steps=8)
    page.mouse.up()


def gradient_png(path: Path, width: int, height: int) -> str:
    """A smooth image: a few kB of PNG even at full HD, so uploads stay fast."""
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :] * np.ones((height, 1))
    Image.fromarray(np.dstack([ramp.astype(np.uint8)] * 3)).save(path)
    return str(path)


def fetch_image(src: str) -> np.ndarray:
    with urllib.request.urlopen(src, timeout=30) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))
