"""In headless Chromium: upload on the Ask tab, ask two checkpoints on the Arena tab, see
both answers without names, vote, see the names and the leaderboard."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from serving.predictors import PredictorHolder
from tests.webapp.browsing import ARTIFACTS, upload, wait_for_text
from tests.webapp.conftest import (
    BROWSER_TIMEOUT_MS,
    FakePredictor,
    lesion_mask,
    live_server,
    phantom_png,
)

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def arena_server(tmp_path_factory) -> Iterator[str]:
    holders = {
        "lesion": PredictorHolder(lambda: FakePredictor(answer="a lesion", mask_fn=lesion_mask)),
        "quarter": PredictorHolder(lambda: FakePredictor(answer="a quarter", delay_s=0.5)),
    }
    with live_server(
        tmp_path_factory.mktemp("arena"), holders=holders, checkpoints="lesion=/l,quarter=/q"
    ) as address:
        yield address


def test_ask_two_checkpoints_vote_and_see_the_names(chromium, arena_server, tmp_path):
    context = chromium.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(BROWSER_TIMEOUT_MS)
    try:
        page.goto(arena_server)
        page.wait_for_selector("#medplib-upload input[type=file]", state="attached")
        upload(page, phantom_png(tmp_path / "chest-ct.png", 320, 256))
        page.get_by_role("tab", name="Arena").click()
        page.fill("#medplib-arena-question textarea", "Where is the lesion?")
        page.click("#medplib-arena-start")
        wait_for_text(page, "#medplib-arena-status", "Which answer is better")
        answers = page.inner_text("#medplib-arena-answer-a") + page.inner_text(
            "#medplib-arena-answer-b"
        )
        assert "a lesion" in answers and "a quarter" in answers
        assert page.inner_text("#medplib-arena-reveal").strip() == ""
        assert page.locator("#medplib-arena-save").count() == 0 or not (
            page.locator("#medplib-arena-save").is_visible()
        )  # the admins' accordion is not for an anonymous user
        a_is_lesion = "a lesion" in page.inner_text("#medplib-arena-answer-a")
        page.click("#medplib-arena-vote-a")
        wait_for_text(page, "#medplib-arena-reveal", "was checkpoint")
        reveal = page.inner_text("#medplib-arena-reveal")
        first = "lesion" if a_is_lesion else "quarter"
        assert f"A was checkpoint {first}" in reveal
        wait_for_text(page, "#medplib-arena-board", "lesion")
        assert page.locator("#medplib-arena-vote-a").is_disabled()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-arena.png"), full_page=True)
    finally:
        context.close()
