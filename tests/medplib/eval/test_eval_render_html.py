"""Pure overlay helpers and the self-contained, escaped HTML report."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from eval_helpers import grounding, rect, write_image, write_json, write_jsonl, write_png
from PIL import Image

from medplib.eval import (
    evaluate_predictions,
    mask_contour,
    overlay_rgb,
    png_base64,
    select_cases,
    union_masks,
    write_report,
)
from medplib.eval.html import Overlay, mask_signals_text
from medplib.eval.render import PREDICTION_ALPHA, PREDICTION_RGB, TARGET_RGB, display_scale


def test_union_and_contour():
    a, b = rect((5, 6), (0, 2, 0, 2)), rect((5, 6), (1, 3, 1, 4))
    assert union_masks([a, b], (5, 6)).sum() == 4 + 6 - 1
    assert not union_masks([], (5, 6)).any()
    with pytest.raises(ValueError, match="shape"):
        union_masks([a, rect((6, 5))], (5, 6))
    block = rect((6, 6), (1, 5, 1, 5))  # 4x4: 12 boundary pixels around a 2x2 interior
    edge = mask_contour(block)
    assert edge.sum() == 12 and not edge[2:4, 2:4].any()
    corner = rect((4, 4), (0, 2, 0, 2))  # the image border counts as outside
    assert mask_contour(corner).sum() == 4
    assert not mask_contour(rect((4, 4))).any()


def test_overlay_pixels():
    image = np.full((8, 12, 3), 100, dtype=np.uint8)
    target = rect((8, 12), (2, 6, 2, 6))
    pred = rect((8, 12), (3, 5, 3, 10))
    out = overlay_rgb(image, target, pred, side_px=None)
    assert out.shape == (8, 12, 3) and out.dtype == np.uint8
    assert tuple(out[0, 0]) == (100, 100, 100)  # untouched
    assert tuple(out[2, 2]) == TARGET_RGB  # on the target's contour
    blended = [round((1 - PREDICTION_ALPHA) * 100 + PREDICTION_ALPHA * c) for c in PREDICTION_RGB]
    assert list(out[4, 8]) == blended  # predicted, outside the target
    assert tuple(out[4, 4]) != TARGET_RGB  # inside the target, not on its edge
    big = overlay_rgb(image, target, pred)
    assert big.shape[:2] == display_scale((8, 12)) == (128, 192)
    with pytest.raises(ValueError, match="target"):
        overlay_rgb(image, rect((4, 4)), None)
    uri = png_base64(out)
    decoded = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert np.array_equal(np.asarray(decoded), out)


def test_html_is_self_contained_and_escaped(tmp_path: Path):
    root = tmp_path / "corpus"
    image = write_image(root, "ct_00--src--case--2d", (10, 14))
    evil = '<script>alert("x")</script>'
    records, lines = [], []
    for k in range(3):
        target = write_png(root, f"masks/t{k}.png", rect((10, 14), (k, k + 4, 2, 9)))
        records.append(grounding(f'id{k}&"<b>', image, target, question=f"Segment {evil} {k}"))
        # empty, partial, exact
        guess = rect((10, 14), *[(), [(k, k + 2, 2, 9)], [(k, k + 4, 2, 9)]][k])
        lines.append(
            {"id": f'id{k}&"<b>', "answer": evil, "masks": [write_png(root, f"p{k}.png", guess)]}
        )
    write_json(tmp_path / "data.json", records)
    write_jsonl(tmp_path / "pred.jsonl", lines)
    result = evaluate_predictions(tmp_path / "pred.jsonl", tmp_path / "data.json", root)
    chosen = select_cases(result, per_modality=1)
    dices = {r.item.id: r.record["dice"] for r in result.scores.results}
    assert [k for k, _ in chosen] == ["worst", "best"]
    assert chosen[0][1].record["dice"] == min(dices.values()) == 0.0
    assert chosen[1][1].record["dice"] == max(dices.values()) == 1.0
    written = write_report(
        result, tmp_path / "r.json", html_path=tmp_path / "r.html", cases_per_modality=1
    )
    page = written["html"].read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(&quot;x&quot;)" in page
    assert "id0&amp;&quot;&lt;b&gt;" in page
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing loaded from outside
    uris = re.findall(r'src="(data:image/png;base64,[^"]+)"', page)
    assert len(uris) == 2
    shown = Image.open(io.BytesIO(base64.b64decode(uris[0].split(",", 1)[1])))
    assert shown.size == (14 * 13, 10 * 13)  # 14 px wide scaled by 192 // 14
    assert (np.asarray(shown) == TARGET_RGB).all(axis=2).any()  # the contour is drawn


def test_a_cases_caption_gives_the_models_own_numbers_when_the_run_kept_them(tmp_path: Path):
    root = tmp_path / "corpus"
    image = write_image(root, "ct_00--src--case--2d", (10, 14))
    target = write_png(root, "masks/t.png", rect((10, 14), (2, 6, 2, 9)))
    records = [grounding(rid, image, target) for rid in ("exact", "missed")]
    lines = [
        {
            "id": "exact",
            "answer": "here",
            "masks": [write_png(root, "p0.png", rect((10, 14), (2, 6, 2, 9)))],
            "mask_scores": [0.974],
            "mirror_agreement": [0.881],
        },
        {"id": "missed", "answer": "there", "masks": [write_png(root, "p1.png", rect((10, 14)))]},
    ]
    write_json(tmp_path / "data.json", records)
    write_jsonl(tmp_path / "pred.jsonl", lines)
    result = evaluate_predictions(tmp_path / "pred.jsonl", tmp_path / "data.json", root)
    written = write_report(
        result, tmp_path / "r.json", html_path=tmp_path / "r.html", cases_per_modality=1
    )
    page = written["html"].read_text()
    assert page.count("Model: ") == 1  # the worst case came without numbers
    assert "Model: score 0.97, mirror agreement 0.88<br>" in page


def test_mask_signals_text_per_mask():
    def case(scores=(), agreements=()):
        return Overlay("ct", "best", "i", "q", "a", 1.0, "", tuple(scores), tuple(agreements))

    assert mask_signals_text(case()) == ""
    assert mask_signals_text(case([0.5])) == "score 0.50"
    assert mask_signals_text(case([None], [0.25])) == "mirror agreement 0.25"
    two = case([0.9, 0.1], [None, 0.333])
    assert mask_signals_text(two) == "score 0.90; score 0.10, mirror agreement 0.33"
    assert mask_signals_text(case([None, None], [None, None])) == ""
