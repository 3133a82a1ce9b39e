"""In headless Chromium: the point/box prompter's clicks, keys and numbering."""

from __future__ import annotations

import pytest

from tests.webapp.browsing import (
    drag,
    gradient_png,
    numbers,
    prompter_box,
    regions_text,
    upload,
    wait_for_text,
)

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

TAGS = "#medplib-prompter text.mp-tag"
STAGE = "#medplib-prompter .mp-stage"


def tags(page) -> list[str]:
    return page.locator(TAGS).all_text_contents()


def test_exact_original_pixels_at_a_reduced_display_size(page, tmp_path):
    box = upload(page, gradient_png(tmp_path / "wide.png", 1600, 1000))
    assert box["width"] < 1000  # drawn at well under half size
    start, end = (101.0, 57.0), (333.0, 211.0)
    drag(page, box, start, end)
    text = regions_text(page, "region 1: box")
    scale = 1600 / box["width"]  # image pixels per screen pixel
    expected = [start[0] * scale, start[1] * scale, end[0] * scale, end[1] * scale]
    # The list prints whole pixels; the stored value is the exact float, not a screen pixel.
    assert numbers(text, "box") == pytest.approx(expected, abs=0.51)


def test_points_negative_points_undo_delete_and_numbers(page, tmp_path):
    box = upload(page, gradient_png(tmp_path / "scan.png", 400, 300))
    s = box["width"] / 400
    drag(page, box, (40 * s, 40 * s), (140 * s, 120 * s))
    regions_text(page, "region 1: box")
    page.mouse.click(box["x"] + 300 * s, box["y"] + 200 * s)
    regions_text(page, "region 2: point")
    page.keyboard.down("Shift")
    page.mouse.click(box["x"] + 200 * s, box["y"] + 250 * s)
    page.keyboard.up("Shift")
    text = regions_text(page, "negative point")
    assert "region 3" not in text  # negative clicks are not regions
    assert tags(page) == ["1", "2", "−"]

    # Undo drops the negative point; the region list follows.
    page.click("#medplib-prompter .mp-undo")
    page.wait_for_function(
        "!document.querySelector('#medplib-regions').innerText.includes('negative point')"
    )
    assert tags(page) == ["1", "2"] and "region 2: point" in page.inner_text("#medplib-regions")

    # Select the box by its number and delete it: the point becomes region 1.
    page.locator(TAGS).first.click()
    page.click("#medplib-prompter .mp-delete")
    text = regions_text(page, r"region 1: point")
    assert "box" not in text and tags(page) == ["1"]
    assert numbers(text, "point") == pytest.approx([300, 200], abs=1)

    page.click("#medplib-prompter .mp-clear")
    regions_text(page, "No regions drawn")
    assert tags(page) == []


def test_keyboard_adds_points_and_boxes(page, tmp_path):
    upload(page, gradient_png(tmp_path / "keys.png", 200, 100))
    page.focus(STAGE)
    # The cursor starts at the centre; arrows move it by 4 px (max side / 50), Shift by 1.
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("Shift+ArrowUp")
    page.keyboard.press("Enter")
    text = regions_text(page, "region 1: point")
    assert numbers(text, "point") == pytest.approx([96, 49], abs=0.01)
    page.keyboard.press("b")
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("b")
    text = regions_text(page, "region 2: box")
    assert numbers(text, "box") == pytest.approx([96, 49, 116, 53], abs=0.01)
    page.keyboard.press("Control+z")
    page.wait_for_function(
        "!document.querySelector('#medplib-regions').innerText.includes('region 2: box')"
    )
    assert tags(page) == ["1"] and "region 1: point" in page.inner_text("#medplib-regions")


def test_a_region_asked_about_is_saved_once_and_new_ones_continue_its_numbers(page, tmp_path):
    box = upload(page, gradient_png(tmp_path / "ct.png", 320, 256))
    s = box["width"] / 320
    drag(page, box, (40 * s, 40 * s), (140 * s, 120 * s))
    regions_text(page, "region 1: box")
    page.fill("#medplib-question textarea", "What is in region 1?")
    page.click("#medplib-ask")
    wait_for_text(page, "#medplib-status", "answered")
    # The box is burnt into the image as a saved region; the canvas holds no prompt.
    assert "region 1: box (40, 40)–(140, 120) px (saved)" in page.inner_text("#medplib-regions")
    assert tags(page) == []
    box = prompter_box(page)
    page.mouse.click(box["x"] + 250 * s, box["y"] + 200 * s)
    text = regions_text(page, "region 2: point")
    assert "region 3" not in text.replace("region 2 or <region>", "")
    assert text.count("box (40, 40)–(140, 120)") == 1 and tags(page) == ["2"]
