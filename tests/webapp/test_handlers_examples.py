"""Examples on the Ask page: a synthetic scene loads as an upload would, its question ready."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from serving.models import ChatSession, Image
from serving.services.examples import EXAMPLES, example_scene
from tests.webapp.conftest import write_png
from tests.webapp.helpers import browser, run_ask, settled, uploaded
from webapp.handlers import upload
from webapp.handlers.common import Web, empty_view
from webapp.handlers.screen import canvas_values


def _count(web: Web, model) -> int:
    return web.call(lambda db: db.scalar(select(func.count()).select_from(model)))


def test_an_example_shows_its_scene_and_fills_the_question(web):
    out = upload.example(web, 2, empty_view(), [])
    view = out["view"]
    assert (view["width_px"], view["height_px"]) == (128, 128) and view["session_id"] is None
    assert out["question"]["value"] == EXAMPLES[2].question
    assert out["question"]["interactive"] is True
    assert out["status"].startswith("Synthetic example loaded.")
    assert EXAMPLES[2].filename in out["image_info"]
    shown = canvas_values(web, view)["prompter"]["value"]["image"]
    np.testing.assert_array_equal(shown, example_scene(2).image)
    # Clicked again, the same bytes: the stored image is reused, not copied.
    again = upload.example(web, 2, view, [])
    assert again["view"]["image_id"] == view["image_id"] and _count(web, Image) == 1
    assert _count(web, ChatSession) == 0


def test_an_example_replaces_an_upload_and_clears_its_regions(web, tmp_path):
    first = uploaded(web, write_png(tmp_path / "scan.png", 60, 40))
    drawn = [{"kind": "point", "xy_px": [3, 3], "label": 1}]
    out = upload.example(web, 0, first["view"], drawn)
    assert out["status"] == (
        "New synthetic example loaded: a new conversation starts. "
        "The region drawn on the previous image was cleared."
    )
    assert out["drawn"] == [] and out["view"]["image_id"] != first["view"]["image_id"]


def test_the_example_question_is_asked_like_a_typed_one(web):
    actor = browser(web, "e" * 32)["actor"]
    screen = upload.example(web, 0, empty_view(), [])
    question = screen["question"]["value"]
    final = settled(run_ask(web, question, None, None, screen["view"], actor))
    assert final["status"] == "answered"
    assert final["chat"][0]["content"] == question
    assert final["chat"][-1]["content"] == f"answer to: {question}"
    assert "mask 1" in final["legend"] and _count(web, ChatSession) == 1


@pytest.mark.parametrize("index", [-1, len(EXAMPLES)])
def test_an_unknown_example_is_an_error_not_a_blank_screen(web, index):
    with pytest.raises(ValueError, match="does not exist"):
        upload.example(web, index, empty_view(), [])
