"""Pure rendering helpers: overlay colours, legend, escaping, routing chart, badges."""

from __future__ import annotations

import numpy as np
import pytest

from webapp import render


def _image(value: int = 100, h: int = 20, w: int = 30) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


def test_overlay_blends_each_mask_in_its_own_colour():
    first = np.zeros((20, 30), dtype=bool)
    first[2:10, 2:12] = True
    second = np.zeros((20, 30), dtype=bool)
    second[12:18, 15:28] = True
    out = render.overlay_masks(_image(100), [first, second], opacity=0.5)
    # Interior pixels: halfway between grey 100 and the palette colour, rounded half up.
    c0, c1 = render.PALETTE[0], render.PALETTE[1]
    assert tuple(out[5, 6]) == tuple(int((100 + v) / 2 + 0.5) for v in c0)
    assert tuple(out[15, 20]) == tuple(int((100 + v) / 2 + 0.5) for v in c1)
    # Outlines are the pure colour; pixels outside every mask are untouched.
    assert tuple(out[2, 6]) == c0 and tuple(out[17, 20]) == c1
    assert tuple(out[0, 0]) == (100, 100, 100)
    assert render.PALETTE[0] != render.PALETTE[1]


def test_overlay_opacity_zero_keeps_only_outlines_and_later_masks_on_top():
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:15, 5:15] = True
    out = render.overlay_masks(_image(100), [mask], opacity=0.0)
    assert tuple(out[10, 10]) == (100, 100, 100)
    assert tuple(out[5, 10]) == render.PALETTE[0]
    opaque = render.overlay_masks(_image(100), [mask, mask], opacity=1.0)
    assert tuple(opaque[10, 10]) == render.PALETTE[1]


def test_overlay_rejects_a_mask_of_another_size():
    with pytest.raises(ValueError, match="mask 1"):
        render.overlay_masks(_image(), [np.ones((5, 5), dtype=bool)])


def test_palette_cycles_for_many_masks():
    n = len(render.PALETTE)
    assert render.mask_color(n) == render.mask_color(0)
    assert len(set(render.PALETTE)) == n


def test_legend_lists_colours_in_mask_order_and_escapes_text():
    html = render.legend_html(
        [
            render.LegendEntry("mask 1", "10 px"),
            render.LegendEntry("<script>alert(1)</script>", "a & b"),
        ]
    )
    r0, g0, b0 = render.PALETTE[0]
    r1, g1, b1 = render.PALETTE[1]
    assert html.index(f"rgb({r0},{g0},{b0})") < html.index(f"rgb({r1},{g1},{b1})")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "a &amp; b" in html
    assert render.legend_html([]) == ""


def test_chat_messages_escape_questions_answers_and_statuses():
    messages = render.chat_messages(
        [
            render.ChatTurn("<script>x()</script> in [region 1]?", '<img src=x onerror="y()">'),
            render.ChatTurn("still going", None, status="running: <b>decode</b> (50 %)"),
        ]
    )
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    joined = "".join(m["content"] for m in messages)
    assert "<script>" not in joined and "<img" not in joined and "<b>" not in joined
    assert messages[0]["content"].startswith("&lt;script&gt;")
    assert messages[1]["content"] == "&lt;img src=x onerror=&quot;y()&quot;&gt;"
    assert messages[3]["content"] == "*running: &lt;b&gt;decode&lt;/b&gt; (50 %)*"


def test_checkpoint_badge_flags_untrained_models_and_escapes_ids():
    trained = render.checkpoint_badge_html("medplib-7b-stage4")
    assert "medplib-7b-stage4" in trained and "untrained" not in trained
    untrained = render.checkpoint_badge_html("tiny-UNTRAINED-demo")
    assert "untrained demo model" in untrained
    assert "<script>" not in render.checkpoint_badge_html("<script>")
    assert render.checkpoint_badge_html(None) == ""


def test_job_status_lines():
    assert render.job_status_text("queued", position=3, phase=None, progress=0) == (
        "queued (position 3)"
    )
    assert render.job_status_text("running", position=None, phase="decoding", progress=0.456) == (
        "running: decoding (46 %)"
    )
    failed = render.job_status_text("failed", position=None, phase=None, progress=0, error="boom")
    assert failed == "failed: boom"


ROUTING = {
    "layers": [0, 1, 2],
    "num_experts": 2,
    "prompt_share": [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]],
    "prompt_image_share": [[0.25, 0.75], [0.5, 0.5], [0.9, 0.1]],
    "prompt_text_share": [[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]],
    "answer_share": [],  # nothing generated: left out
    "answer_experts": [],
}


def test_routing_series_reads_the_predictors_record():
    series = render.routing_series(ROUTING)
    assert series == {
        "image tokens": [(0, 0.25), (1, 0.5), (2, 0.9)],
        "question tokens": [(0, 0.1), (1, 0.2), (2, 0.3)],
    }
    assert render.routing_series({**ROUTING, "num_experts": 1}) == {}
    assert render.routing_series(None) == {} and render.routing_series({"x": 1}) == {}


def test_routing_chart_is_an_rgb_image_or_none():
    chart = render.routing_chart(ROUTING)
    assert chart is not None and chart.ndim == 3 and chart.shape[2] == 3
    assert chart.shape[0] > 100 and chart.shape[1] > 200
    # The plotted lines add colours that a blank white figure would not have.
    assert len(np.unique(chart.reshape(-1, 3), axis=0)) > 10
    assert render.routing_chart({}) is None


def test_routing_legend_sits_below_the_plot_not_over_its_lines():
    chart = render.routing_chart(ROUTING).astype(int)
    blue = np.array([31, 119, 180])  # matplotlib's first series colour
    is_blue = np.abs(chart - blue).sum(axis=2) < 30
    rows = np.nonzero(is_blue.any(axis=1))[0]
    # The line is drawn in the axes; its legend sample is the only blue in the bottom fifth.
    assert rows.min() < chart.shape[0] * 0.6
    assert is_blue[int(chart.shape[0] * 0.8) :].any()


def test_region_list_escapes_and_hints():
    text = render.region_list_markdown(["region 1: box <b>"], ["note <i>"])
    assert "&lt;b&gt;" in text and "&lt;i&gt;" in text and "<b>" not in text
    assert "region 1" in text and "`<region>`" in text
    assert "No regions drawn" in render.region_list_markdown([])


def test_annotate_regions_outlines_each_kind_in_the_saved_colour():
    from medplib.masks import encode_rle

    mask = np.zeros((160, 240), dtype=bool)
    mask[80:120, 160:200] = True
    regions = [
        {"kind": "box", "xyxy_px": [8, 8, 120, 64], "label": 1},
        {"kind": "point", "xy_px": [20, 120], "label": 2},
        {"kind": "mask", "rle": encode_rle(mask), "label": 3},
    ]
    shown = _image(100, 80, 120)  # a half-size copy of a 240x160 image
    out = render.annotate_regions(shown, regions, original_wh=(240, 160))
    yellow = render.SAVED_REGION_RGB
    assert out.shape == shown.shape and tuple(shown[4, 30]) == (100, 100, 100)
    assert tuple(out[4, 30]) == yellow  # the box's top edge, at half scale
    assert tuple(out[59, 99]) == yellow  # the mask's bottom-right outline pixel
    assert tuple(out[57, 97]) == (100, 100, 100)  # inside the mask: outlined, not filled
    assert tuple(out[75, 5]) == (100, 100, 100)  # far from every region
    assert render.annotate_regions(shown, [], original_wh=(240, 160)) is shown
