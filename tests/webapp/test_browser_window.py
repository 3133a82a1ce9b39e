"""In headless Chromium: the DICOM window applies after a question, as before one."""

from __future__ import annotations

import numpy as np
import pytest

from tests.webapp.browsing import upload, wait_for_text
from tests.webapp.test_handlers_formats import _ct_dicom

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def choose_window(page, label: str) -> None:
    page.click("#medplib-window input")
    page.get_by_role("option", name=label).click()


def test_window_change_after_a_question_rerenders_the_image(page, tmp_path):
    hu = np.full((64, 96), -600, dtype=np.int16)
    hu[:, 48:] = 700
    path = tmp_path / "chest.dcm"
    path.write_bytes(_ct_dicom(hu))
    upload(page, str(path))
    wait_for_text(page, "#medplib-image-info", "window: soft_tissue")
    page.fill("#medplib-question textarea", "What is shown?")
    page.click("#medplib-ask")
    wait_for_text(page, "#medplib-status", "answered")
    choose_window(page, "bone (W 1800, L 400)")
    wait_for_text(page, "#medplib-image-info", "window: bone")
    wait_for_text(page, "#medplib-status", "new conversation")
    # The canvas shows the re-rendered image, ready for the next question.
    page.wait_for_function(
        "() => { const i = document.querySelector('#medplib-prompter img.mp-image');"
        " return i && i.complete && i.naturalWidth === 96; }"
    )
    page.fill("#medplib-question textarea", "And in the bone window?")
    page.click("#medplib-ask")
    wait_for_text(page, "#medplib-status", "answered")
    assert "And in the bone window?" in page.inner_text("#medplib-chat")
    assert "What is shown?" not in page.inner_text("#medplib-chat")
