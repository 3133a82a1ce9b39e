"""In headless Chromium: two reviewers correct a returned mask with the brush; every version is
kept and the agreement table shows the Dice between their corrections."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import select

from medplib.masks import decode_rle
from serving.models import Mask, MaskCorrection, Role
from serving.platform import build_platform
from serving.services.accounts import create_user
from serving.settings import Settings
from tests.webapp.browsing import open_accordion, upload, wait_for_text
from tests.webapp.conftest import BROWSER_TIMEOUT_MS, lesion_mask, live_server, phantom_png
from tests.webapp.test_browser_login import log_in

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, object]]:
    root = tmp_path_factory.mktemp("review")

    def predictor():
        from tests.webapp.conftest import FakePredictor

        return FakePredictor(mask_fn=lesion_mask)

    with live_server(root, predictor) as address:
        # A second reviewer in the same database (live_server makes the reviewer "rita").
        extra = build_platform(
            Settings(database_url=f"sqlite:///{root / 'medplib.db'}", artefact_dir=root / "a")
        )
        extra.call(create_user, username="rob", password="a long password", role=Role.reviewer)
        yield address, extra


@pytest.fixture
def open_page(chromium, server):
    address, _ = server
    contexts = []

    def make():
        context = chromium.new_context(viewport={"width": 1400, "height": 1100})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(BROWSER_TIMEOUT_MS)
        page.goto(address)
        page.wait_for_selector("#medplib-upload input[type=file]", state="attached")
        return page

    yield make
    for context in contexts:
        context.close()


def correct_with_brush(page, reviewer: str, stroke: tuple[float, float, float, float]) -> str:
    """Log in, pick the queued answer, open mask 1, paint one stroke (fractions of the
    canvas), save; returns the versions list shown after saving."""
    log_in(page, reviewer)
    page.get_by_role("tab", name="Review").click()
    page.click("#medplib-review-load")
    wait_for_text(page, "#medplib-review-status", "answers to rate")
    open_accordion(page, "Correct a mask", "#medplib-correction-open")
    page.click("#medplib-correction-open")
    wait_for_text(page, "#medplib-correction-status", "tinted")
    canvas = page.locator("#medplib-correction-editor canvas").first
    canvas.scroll_into_view_if_needed()
    page.wait_for_timeout(500)  # the background image is laid out after the value arrives
    box = canvas.bounding_box()
    x0, y0, x1, y1 = stroke
    page.mouse.move(box["x"] + box["width"] * x0, box["y"] + box["height"] * y0)
    page.mouse.down()
    for i in range(1, 13):
        t = i / 12
        page.mouse.move(
            box["x"] + box["width"] * (x0 + (x1 - x0) * t),
            box["y"] + box["height"] * (y0 + (y1 - y0) * t),
        )
    page.mouse.up()
    page.wait_for_timeout(300)
    page.click("#medplib-correction-save")
    wait_for_text(page, "#medplib-correction-status", "Saved as version")
    return page.inner_text("#medplib-correction-versions")


def test_two_reviewers_correct_a_mask_and_their_agreement_shows(open_page, server, tmp_path):
    _, platform = server
    student = open_page()
    upload(student, phantom_png(tmp_path / "ct.png", 320, 256))
    student.fill("#medplib-question textarea", "segment the lesion")
    student.click("#medplib-ask")
    wait_for_text(student, "#medplib-status", "answered")

    rita = open_page()
    versions = correct_with_brush(rita, "rita", (0.40, 0.30, 0.55, 0.45))
    assert re.search(r"version 0\b.*model", versions, re.S | re.I)
    assert re.search(r"version 1\b.*rita", versions, re.S)

    rob = open_page()
    versions = correct_with_brush(rob, "rob", (0.40, 0.60, 0.55, 0.75))
    assert re.search(r"version 2\b.*rob", versions, re.S)

    def stored(db):
        mask = db.scalars(select(Mask)).one()
        rows = db.scalars(
            select(MaskCorrection)
            .where(MaskCorrection.mask_id == mask.id)
            .order_by(MaskCorrection.version)
        ).all()
        return decode_rle(mask.rle), [decode_rle(r.rle) for r in rows]

    model, (v1, v2) = platform.call(stored)
    # The model's mask is kept as it was: the lesion the fake model returns.
    assert np.array_equal(model, lesion_mask(256, 320))
    # Each brush stroke added pixels, and each version holds the one before it (add mode).
    assert v1.sum() > model.sum() + 50 and (v1 >= model).all()
    assert v2.sum() > v1.sum() + 50 and (v2 >= v1).all()

    open_accordion(rob, "Agreement and checkpoints", "#medplib-review-stats")
    rob.click("#medplib-review-stats")
    wait_for_text(rob, "#medplib-mask-agreement", "rita")
    cells = [t.strip() for t in rob.inner_text("#medplib-mask-agreement").splitlines()]
    cells = [t for t in cells if t]
    expected = 2 * (v1 & v2).sum() / (v1.sum() + v2.sum())
    assert 0.3 < expected < 0.99  # two different strokes: neither identical nor disjoint
    at = cells.index("rita & rob")
    # After the pair's name: masks corrected by both, mean Dice, mean IoU.
    assert cells[at + 1 : at + 4] == ["1", f"{expected:.2f}", f"{expected / (2 - expected):.2f}"]
    # Beside it, the verdicts against the model's own numbers: one row per verdict, none yet.
    signals = [t.strip() for t in rob.inner_text("#medplib-verdict-signals").splitlines()]
    signals = [t for t in signals if t]
    for verdict in ("good", "partly", "wrong"):
        assert signals[signals.index(verdict) + 1] == "0"
