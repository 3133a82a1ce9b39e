"""Examples on the Ask page: a synthetic scene loads as an upload would, its question ready."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from sqlalchemy import func, select

from medplib.masks import decode_rle
from serving.models import ChatSession, Image, Turn
from serving.services.examples import EXAMPLES, example_box_xyxy_px, example_scene
from tests.webapp.conftest import write_png
from tests.webapp.helpers import browser, run_ask, settled, uploaded
from webapp.handlers import examples
from webapp.handlers.common import Web, empty_view
from webapp.handlers.screen import canvas_values

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # gr.Warning outside a request


def _count(web: Web, model) -> int:
    return web.call(lambda db: db.scalar(select(func.count()).select_from(model)))


def test_an_example_shows_its_scene_and_fills_the_question(web):
    out = examples.load(web, 2, empty_view(), [])
    view = out["view"]
    assert (view["width_px"], view["height_px"]) == (128, 128) and view["session_id"] is None
    assert out["question"]["value"] == EXAMPLES[2].question
    assert out["question"]["interactive"] is True
    assert out["status"].startswith("Synthetic example loaded.")
    assert EXAMPLES[2].filename in out["image_info"]
    shown = canvas_values(web, view)["prompter"]["value"]["image"]
    np.testing.assert_array_equal(shown, example_scene(2).image)
    # Clicked again, the same bytes: the stored image is reused, not copied.
    again = examples.load(web, 2, view, [])
    assert again["view"]["image_id"] == view["image_id"] and _count(web, Image) == 1
    assert _count(web, ChatSession) == 0


def test_a_region_example_comes_with_its_box_drawn_as_region_1(web):
    index = next(i for i, c in enumerate(EXAMPLES) if c.box_around == "spleen")
    screen = examples.load(web, index, empty_view(), [])
    assert screen["prompter"] is None  # reset first, as for any new image
    filled = examples.canvases(web, index, screen["view"], None)
    x0, y0, x1, y1 = example_box_xyxy_px(index)
    assert filled["prompter"]["value"]["points"] == [[x0, y0, 2.0, x1, y1, 3.0]]
    assert [r["label"] for r in filled["drawn"]] == [1]
    assert "region 1: box" in filled["regions_md"]
    spleen = next(o for o in example_scene(index).objects if o.name == "spleen")
    ys, xs = np.nonzero(spleen.mask)
    assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)

    # Asked as it stands, the question reaches the model with the box as its region: the
    # test predictor returns its own mask, then each region it was given.
    actor = browser(web, "r" * 32)["actor"]
    question = screen["question"]["value"]
    final = settled(
        run_ask(web, question, filled["prompter"]["value"], None, screen["view"], actor)
    )
    assert final["status"] == "answered"
    assert final["chat"][0]["content"] == "What is in &#91;region 1&#93;?"
    stored_question, rles = web.call(
        lambda db: (lambda t: (t.question, [m.rle for m in t.masks]))(db.scalar(select(Turn)))
    )
    assert stored_question == "What is in <region>?" and len(rles) == 2
    region = decode_rle(rles[1])
    assert region.sum() == (x1 - x0) * (y1 - y0) and region[y0:y1, x0:x1].all()


def test_an_example_without_a_region_fills_the_canvases_empty(web):
    screen = examples.load(web, 1, empty_view(), [])
    filled = examples.canvases(web, 1, screen["view"], None)
    assert filled["prompter"]["value"]["points"] == [] and "drawn" not in filled
    # A load that failed left the canvas value in place: nothing is touched.
    kept = examples.canvases(
        web, 1, screen["view"], {"image": None, "points": [[1, 1, 1, 0, 0, 4]]}
    )
    assert kept["prompter"] == gr.update() and kept["editor"] == gr.update()


def test_an_example_replaces_an_upload_and_clears_its_regions(web, tmp_path):
    first = uploaded(web, write_png(tmp_path / "scan.png", 60, 40))
    drawn = [{"kind": "point", "xy_px": [3, 3], "label": 1}]
    out = examples.load(web, 0, first["view"], drawn)
    assert out["status"] == (
        "New synthetic example loaded: a new conversation starts. "
        "The region drawn on the previous image was cleared."
    )
    assert out["drawn"] == [] and out["view"]["image_id"] != first["view"]["image_id"]


def test_the_example_question_is_asked_like_a_typed_one(web):
    actor = browser(web, "e" * 32)["actor"]
    screen = examples.load(web, 0, empty_view(), [])
    question = screen["question"]["value"]
    final = settled(run_ask(web, question, None, None, screen["view"], actor))
    assert final["status"] == "answered"
    assert final["chat"][0]["content"] == question
    assert final["chat"][-1]["content"] == f"answer to: {question}"
    assert "mask 1" in final["legend"] and _count(web, ChatSession) == 1


def test_an_example_over_the_server_limits_is_refused_and_the_screen_kept(make_platform, tmp_path):
    web = Web(make_platform(max_image_pixels=100 * 100))  # the scenes are 128 × 128
    first = uploaded(web, write_png(tmp_path / "scan.png", 60, 40))
    out = examples.load(web, 0, first["view"], [])
    assert set(out) == {"status"} and out["status"].startswith("⚠")
    assert "128x128 pixels (16,384 pixels); the limit is 10,000 pixels" in out["status"]
    # The canvases keep the uploaded image and its prompts: the fill step changes nothing.
    kept = examples.canvases(web, 0, first["view"], {"image": None, "points": []})
    assert kept == {"prompter": gr.update(), "editor": gr.update()}
    assert _count(web, Image) == 1


@pytest.mark.parametrize("index", [-1, len(EXAMPLES)])
def test_an_unknown_example_is_an_error_not_a_blank_screen(web, index):
    with pytest.raises(ValueError, match="does not exist"):
        examples.load(web, index, empty_view(), [])
