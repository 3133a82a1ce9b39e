"""In headless Chromium: a first-time visitor clicks an example, asks its question, sees a mask."""

from __future__ import annotations

import re

import pytest

from serving.services.examples import EXAMPLES, example_box_xyxy_px
from tests.webapp.browsing import drag, numbers, prompter_box, regions_text, wait_for_text

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def test_an_example_fills_the_canvas_and_the_question_then_answers(page):
    case = EXAMPLES[0]
    page.click("#medplib-example-0")
    wait_for_text(page, "#medplib-image-info", re.escape(case.filename))
    box = prompter_box(page)
    assert box["width"] == pytest.approx(box["height"], abs=1)  # the 128 × 128 scene
    wait_for_text(page, "#medplib-status", "Synthetic example loaded")
    assert page.input_value("#medplib-question textarea") == case.question

    # The example is an ordinary image: a box can be drawn on it before asking.
    drag(
        page,
        box,
        (box["width"] * 0.2, box["height"] * 0.2),
        (box["width"] * 0.6, box["height"] * 0.7),
    )
    regions_text(page, "region 1: box")
    page.click("#medplib-ask")
    wait_for_text(page, "#medplib-status", "answered")
    assert case.question in page.inner_text("#medplib-chat")
    assert "mask 1" in page.inner_text("#medplib-legend")

    # Another example starts a new case on its own scene and question.
    page.click("#medplib-example-4")
    wait_for_text(page, "#medplib-image-info", re.escape(EXAMPLES[4].filename))
    wait_for_text(page, "#medplib-status", "New synthetic example loaded")
    assert page.input_value("#medplib-question textarea") == EXAMPLES[4].question
    wait_for_text(page, "#medplib-regions", "No regions")


def test_a_region_example_shows_its_box_and_asks_about_it(page):
    index = next(i for i, c in enumerate(EXAMPLES) if c.box_around)
    page.click(f"#medplib-example-{index}")
    wait_for_text(page, "#medplib-image-info", re.escape(EXAMPLES[index].filename))
    prompter_box(page)
    text = regions_text(page, "region 1: box")
    x0, y0, x1, y1 = example_box_xyxy_px(index)
    assert numbers(text, "box") == pytest.approx([x0, y0, x1, y1], abs=1)
    # The box is on the canvas, numbered as in the list, and can be edited like a drawn one.
    assert page.locator("#medplib-prompter text.mp-tag").all_text_contents() == ["1"]
    assert page.input_value("#medplib-question textarea") == EXAMPLES[index].question
    page.click("#medplib-ask")
    wait_for_text(page, "#medplib-status", "answered")
    assert "What is in [region 1]?" in page.inner_text("#medplib-chat")
    assert "mask 2" in page.inner_text("#medplib-legend")  # the test model echoes the region
