"""In headless Chromium: canvas scaling for large and tall images; share links and forks."""

from __future__ import annotations

import pytest

from tests.webapp.browsing import (
    drag,
    gradient_png,
    numbers,
    regions_text,
    upload,
    wait_for_text,
)
from tests.webapp.conftest import write_png

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def test_canvas_scaling_for_large_and_tall_images(page, tmp_path):
    box = upload(page, gradient_png(tmp_path / "wide.png", 1600, 1000))
    assert box["width"] < 1600  # shown smaller than the image
    drag(
        page,
        box,
        (box["width"] * 0.25, box["height"] * 0.25),
        (box["width"] * 0.75, box["height"] * 0.75),
    )
    text = regions_text(page, "region 1: box")
    tolerance = 1600 / box["width"] + 0.5  # one screen pixel, in image pixels
    assert numbers(text, "box") == pytest.approx([400, 250, 1200, 750], abs=tolerance)

    box = upload(page, gradient_png(tmp_path / "tall.png", 600, 1200))
    status = page.inner_text("#medplib-status")
    assert "new conversation" in status and "region drawn on the previous image was" in status
    regions_text(page, "No regions drawn")
    assert box["height"] <= 600  # fits the screen
    drag(
        page,
        box,
        (box["width"] * 0.25, box["height"] * 0.25),
        (box["width"] * 0.75, box["height"] * 0.75),
    )
    text = regions_text(page, "region 1: box")
    tolerance = 1200 / box["height"] + 0.5
    assert numbers(text, "box") == pytest.approx([150, 300, 450, 900], abs=tolerance)


def test_shared_link_is_read_only_until_forked(page, browser_server, tmp_path):
    from gradio_client import Client, handle_file

    owner = Client(browser_server, verbose=False)
    made = owner.predict(
        handle_file(write_png(tmp_path / "s.png", 80, 60)), "", 2, -1, "shared", api_name="/upload"
    )
    owner.predict(made["session_id"], "what?", "", True, api_name="/ask")
    link = owner.predict(made["session_id"], "fork", 24, False, api_name="/share")
    assert link["url"].startswith(browser_server + "?share=")  # the address the client used
    page.goto(link["url"])
    wait_for_text(page, "#medplib-banner", "Read-only view")
    assert page.locator("#medplib-ask").is_disabled()
    assert "answer to: what?" in page.inner_text("#medplib-chat")
    page.click("#medplib-fork")
    wait_for_text(page, "#medplib-status", "Forked")
    assert page.locator("#medplib-ask").is_enabled()
    assert page.inner_text("#medplib-banner").strip() == ""
