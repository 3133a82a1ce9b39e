"""In headless Chromium, with the shipped demo checkpoint (not a stand-in): ask for a mask.

The whole path a visitor takes on the demo: upload, ask, the real model answers through the
embedded runner, and the overlay covers the structure that was asked for. The page is saved
as a test artefact (and to ``$MEDPLIB_TEST_SCREENSHOT`` when set, to refresh the README's
picture).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medplib.checkpoint import ASSET_DEMO_DIR, CONFIG_NAME
from medplib.data.synthetic import generate_scene
from serving.predictors import load_predictor
from tests.webapp.browsing import ARTIFACTS, fetch_image, upload, wait_for_text
from tests.webapp.conftest import BROWSER_TIMEOUT_MS, live_server

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

SCALE = 3  # the scene is painted at the model's 128 px and shown at 384 px


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory) -> Iterator[str]:
    assert (ASSET_DEMO_DIR / CONFIG_NAME).is_file(), "the demo checkpoint must ship in the repo"

    def predictor():
        return load_predictor("medplib", checkpoint="", device="cpu")

    with live_server(tmp_path_factory.mktemp("demo-model"), predictor) as address:
        yield address


def _scene_png(path: Path) -> tuple[str, str, np.ndarray]:
    """A synthetic CT slice, its largest named structure and that structure's mask."""
    scene = generate_scene("ct", np.random.default_rng(7))
    target = max(scene.objects, key=lambda o: int(o.mask.sum()))
    image = np.kron(scene.image, np.ones((SCALE, SCALE, 1), dtype=np.uint8))
    Image.fromarray(image).save(path)
    mask = np.kron(target.mask.astype(np.uint8), np.ones((SCALE, SCALE), dtype=np.uint8)) > 0
    return str(path), target.name, mask


def test_the_shipped_model_grounds_the_structure_asked_for(chromium, demo_server, tmp_path):
    png, name, truth = _scene_png(tmp_path / "ct-slice.png")
    context = chromium.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(BROWSER_TIMEOUT_MS * 2)  # the model loads on the first question
    try:
        page.goto(demo_server)
        page.wait_for_selector("#medplib-upload input[type=file]", state="attached")
        upload(page, png)
        page.fill("#medplib-question textarea", f"Please segment the {name} in this image.")
        page.click("#medplib-ask")
        wait_for_text(page, "#medplib-status", "answered")
        # No handler failed along the way (gradio shows failures as toasts).
        toasts = page.locator(".toast-body")
        assert toasts.count() == 0, toasts.all_inner_texts()
        answer = page.inner_text("#medplib-chat")
        said = answer.split("Please segment")[-1]
        assert name in said  # the answer names the target
        assert "[mask 1]" in said  # and says where its mask was produced
        assert "untrained" not in page.inner_text("#medplib-badge")
        # The shipped config checks each mask against its mirror; the legend gives the Dice.
        agreement = re.search(r"mirror agreement (\d\.\d\d)", page.inner_text("#medplib-legend"))
        assert agreement is not None and 0.0 <= float(agreement.group(1)) <= 1.0

        original = np.asarray(Image.open(png).convert("RGB"), dtype=int)
        overlay = fetch_image(page.locator("#medplib-overlay img").first.get_attribute("src"))
        assert overlay.shape == original.shape
        tinted = np.abs(overlay.astype(int) - original).sum(axis=2) > 30
        inside, outside = tinted[truth].mean(), tinted[~truth].mean()
        # The mask lies on the structure asked for, not spread over the image.
        assert inside > 0.6 and outside < 0.15, (inside, outside)

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "browser-demo-model.png"
        page.screenshot(path=str(shot), full_page=True)
        target = os.environ.get("MEDPLIB_TEST_SCREENSHOT")
        if target:
            shutil.copyfile(shot, target)
    finally:
        context.close()
