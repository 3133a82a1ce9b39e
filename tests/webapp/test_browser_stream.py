"""In headless Chromium: an answer appears word by word while the model generates it."""

from __future__ import annotations

import pytest

from tests.webapp.browsing import upload, wait_for_text
from tests.webapp.conftest import FakePredictor, live_server, phantom_png

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

ANSWER = "The lesion sits in the right upper lobe, close to the pleura, about two centimetres wide."


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    def predictor() -> FakePredictor:
        # Sixteen words over 3.2 s: a word every 0.2 s, as a slow model emits tokens.
        return FakePredictor(answer=ANSWER, delay_s=3.2)

    with live_server(tmp_path_factory.mktemp("stream"), predictor) as address:
        yield address


def test_partial_text_shows_before_the_answer_is_stored(chromium, slow_server, tmp_path):
    context = chromium.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        page.goto(slow_server)
        page.wait_for_selector("#medplib-upload input[type=file]", state="attached")
        upload(page, phantom_png(tmp_path / "ct.png", 320, 256))
        page.fill("#medplib-question textarea", "Where is the lesion?")
        page.click("#medplib-ask")
        # Some words, not all of them, with the streaming cursor, while the job still runs.
        wait_for_text(page, "#medplib-chat", r"The lesion sits in[^\n]*▍")
        partial = page.inner_text("#medplib-chat")
        status = page.inner_text("#medplib-status")
        assert "two centimetres wide." not in partial and "answered" not in status
        wait_for_text(page, "#medplib-status", "answered")
        final = page.inner_text("#medplib-chat")
        assert ANSWER in final and "▍" not in final
    finally:
        context.close()
