"""The point/box prompter's value on the server side: what it accepts, refuses and sends."""

from __future__ import annotations

import copy

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from webapp.components.prompter import PointBoxPrompter
from webapp.regions import collect_regions


@pytest.fixture(scope="module")
def prompter() -> PointBoxPrompter:
    return PointBoxPrompter(label="canvas", first_label=3, render=False)


def test_browser_value_keeps_the_image_prompter_contract(prompter):
    rows = [[10.25, 8.5, 2, 30.75, 24.0, 3], [5.5, 6.5, 1, 0, 0, 4], [7, 7, 0, 0, 0, 4]]
    value = prompter.preprocess({"image": {"path": "/cache/x.png", "url": "u"}, "points": rows})
    assert value == {"image": "/cache/x.png", "points": rows}
    # The page's region code reads it unchanged: a box and a point, floats kept, the
    # negative click dropped with a sentence.
    found = collect_regions(value, None, original_wh=(60, 40), shown_wh=(60, 40))
    assert [r["kind"] for r in found.regions] == ["box", "point"]
    assert found.regions[0]["xyxy_px"] == [10.25, 8.5, 30.75, 24.0]
    assert "negative point" in found.notes[0]


def test_empty_and_malformed_values(prompter):
    assert prompter.preprocess(None) is None
    assert prompter.preprocess("") is None  # what the HTML frontend sends for "no value"
    with pytest.raises(gr.Error, match="object with 'image' and 'points'"):
        prompter.preprocess([[1, 2, 1, 0, 0, 4]])
    with pytest.raises(gr.Error, match=r"list of \[x1, y1, t1, x2, y2, t2\]"):
        prompter.preprocess({"image": None, "points": "1,2"})


def test_server_value_becomes_a_lossless_png_and_float_rows(prompter):
    pixels = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    sent = prompter.postprocess({"image": pixels, "points": [[1, 2, 1, 0, 0, 4]]})
    assert sent["points"] == [[1.0, 2.0, 1.0, 0.0, 0.0, 4.0]]
    assert sent["image"]["meta"] == {"_type": "gradio.FileData"}
    assert sent["image"]["path"].endswith(".png")
    assert np.array_equal(np.asarray(Image.open(sent["image"]["path"])), pixels)
    assert prompter.postprocess(None) is None
    assert prompter.postprocess({"image": None, "points": []}) == {"image": None, "points": []}


def test_props_reach_the_page_config(prompter):
    config = prompter.get_config()
    assert config["props"]["first_label"] == 3
    # Plain values only: the page config is copied per request.
    assert (config["first_label"], config["max_height_px"]) == (3, 460)
    copy.deepcopy(config)
    assert "mp-stage" in config["html_template"] and 'trigger("input")' in config["js_on_load"]
    schema = prompter.api_info()
    assert schema["properties"]["points"]["items"]["minItems"] == 6
