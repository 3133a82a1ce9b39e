"""In headless Chromium: upload, draw a box and a point, sketch, ask, see the overlay."""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest

from tests.webapp.browsing import (
    ARTIFACTS,
    drag,
    fetch_image,
    numbers,
    regions_text,
    upload,
    wait_for_text,
)
from tests.webapp.conftest import lesion_mask, phantom_png
from webapp import render

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def test_upload_draw_sketch_ask_and_see_the_overlay(page, tmp_path):
    box = upload(page, phantom_png(tmp_path / "chest-ct.png", 320, 256))
    # The canvas fills the column: a small image is drawn larger, its aspect kept.
    assert box["width"] > 320 and box["height"] / box["width"] == pytest.approx(256 / 320, abs=0.01)
    s = box["width"] / 320  # screen pixels per image pixel
    drag(page, box, (100 * s, 60 * s), (200 * s, 150 * s))
    page.mouse.click(box["x"] + 250 * s, box["y"] + 200 * s)
    text = regions_text(page, "region 2: point")
    assert numbers(text, "box") == pytest.approx([100, 60, 200, 150], abs=1)
    assert numbers(text, "point") == pytest.approx([250, 200], abs=1)
    # The canvas numbers its prompts as the region list does.
    assert page.locator("#medplib-prompter text.mp-tag").all_text_contents() == ["1", "2"]

    page.get_by_role("tab", name="Sketch").click()
    editor = page.locator("#medplib-editor canvas").first.bounding_box()
    # The editor centres the image in its canvas: stroke across the middle.
    w, h = editor["width"], editor["height"]
    drag(page, editor, (w * 0.45, h * 0.45), (w * 0.55, h * 0.55))
    text = regions_text(page, "region 3: sketch")
    assert int(re.search(r"sketch, ([\d,]+) px", text).group(1).replace(",", "")) > 100

    page.fill("#medplib-question textarea", "Is region 1 near <region>?")
    page.click("#medplib-ask")
    wait_for_text(page, "#medplib-status", "queued|running")
    wait_for_text(page, "#medplib-status", "answered")
    chat = page.inner_text("#medplib-chat")
    assert "Is [region 1] near [region 2]?" in chat
    assert "answer to: Is <region> near <region>?" in chat
    legend = page.inner_text("#medplib-legend")
    assert all(f"mask {i}" in legend for i in (1, 2, 3))
    assert "untrained demo model" in page.inner_text("#medplib-badge")
    # The file list breaks names before the extension.
    downloads = page.inner_text("#medplib-downloads").replace("\n", "")
    assert "answer1-mask1.png" in downloads and "answer1-mask1.rle.json" in downloads

    overlay = fetch_image(page.locator("#medplib-overlay img").first.get_attribute("src"))
    assert overlay.shape == (256, 320, 3)
    lesion = lesion_mask(256, 320)
    colour = np.asarray(render.PALETTE[0], dtype=float)
    # Inside the lesion the overlay leans to mask 1's colour; far away it is untouched grey.
    assert np.abs(overlay[lesion].mean(axis=0) - colour).sum() < 150
    assert np.ptp(overlay[5, 5].astype(int)) < 3

    page.get_by_role("tab", name="Points and boxes").click()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-answer.png"), full_page=True)
    target = os.environ.get("MEDPLIB_TEST_SCREENSHOT")
    if target:
        shutil.copyfile(ARTIFACTS / "browser-answer.png", target)

    # A reload keeps the anonymous identity (localStorage), so the session is listed.
    page.reload()
    page.get_by_role("tab", name="My sessions").click()
    wait_for_text(page, "#medplib-sessions", r"chest-ct\.png")
