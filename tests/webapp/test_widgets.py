"""The canvases' payloads decoded into region prompts (point/box rows, sketch layers)."""

from __future__ import annotations

import numpy as np
import pytest

from medplib.errors import UserInputError
from medplib.geometry import BoxPrompt, PointPrompt, prompt_to_mask
from medplib.masks import mask_bbox_xyxy_px
from webapp.widgets import decode_prompter_rows, editor_layer_to_mask, prompter_rows_to_prompts

# Rows observed from gradio_image_prompter on a 300x200 (width x height) image.
OBSERVED_DRAG = [50.0, 40.0, 2.0, 150.0, 120.0, 3.0]
OBSERVED_CLICK = [200.0, 60.0, 1.0, 0.0, 0.0, 4.0]


def test_observed_prompter_rows():
    prompts = prompter_rows_to_prompts([OBSERVED_DRAG, OBSERVED_CLICK], width_px=300, height_px=200)
    assert prompts == [BoxPrompt((50.0, 40.0, 150.0, 120.0)), PointPrompt((200.0, 60.0))]
    box_mask = prompt_to_mask(prompts[0], height_px=200, width_px=300)
    assert box_mask.shape == (200, 300)
    assert mask_bbox_xyxy_px(box_mask) == (50, 40, 150, 120)
    assert box_mask.sum() == 100 * 80
    point_mask = prompt_to_mask(prompts[1], height_px=200, width_px=300)
    # Half-size 20 px (300 / 48 rounds to 6): a 41x41 square centred on pixel (200, 60).
    assert mask_bbox_xyxy_px(point_mask) == (180, 40, 221, 81)
    assert point_mask.sum() == 41 * 41


def test_prompter_box_corners_any_order_and_numpy_rows():
    rows = np.array([[150.0, 120.0, 2.0, 50.0, 40.0, 3.0], [150.0, 40.0, 2.0, 50.0, 120.0, 3.0]])
    prompts = prompter_rows_to_prompts(rows, width_px=300, height_px=200)
    assert prompts == [BoxPrompt((50.0, 40.0, 150.0, 120.0))] * 2


def test_prompter_negative_points_skipped_and_reported():
    decoding = decode_prompter_rows(
        [[10.0, 20.0, 0.0, 0.0, 0.0, 4.0], OBSERVED_CLICK], width_px=300, height_px=200
    )
    assert decoding.prompts == [PointPrompt((200.0, 60.0))]
    assert len(decoding.skipped) == 1
    assert "Prompt 1 is a negative point at (10, 20)" in decoding.skipped[0]
    assert prompter_rows_to_prompts(None, width_px=300, height_px=200) == []


def test_prompter_bad_rows():
    with pytest.raises(UserInputError, match=r"Region 1: unknown prompt type \(5, 4\)"):
        prompter_rows_to_prompts([[1.0, 1.0, 5.0, 0.0, 0.0, 4.0]], width_px=300, height_px=200)
    with pytest.raises(UserInputError, match="is not \\[x1, y1, t1, x2, y2, t2\\]"):
        prompter_rows_to_prompts([[1.0, 1.0, 1.0]], width_px=300, height_px=200)
    with pytest.raises(UserInputError, match="Region 2: the point \\(350, 60\\) lies outside"):
        prompter_rows_to_prompts(
            [OBSERVED_CLICK, [350.0, 60.0, 1.0, 0.0, 0.0, 4.0]], width_px=300, height_px=200
        )


def test_editor_layer_downscaled_maps_back_exactly():
    # Original 300x200 image shown in the editor at 150x100: each layer pixel is a 2x2 block.
    layer = np.zeros((100, 150, 4), dtype=np.uint8)
    layer[10:20, 30:60] = (255, 0, 0, 255)
    layer[50, 100] = (0, 0, 0, 1)  # faint alpha still counts as painted
    mask = editor_layer_to_mask(layer, height_px=200, width_px=300)
    expected = np.zeros((200, 300), dtype=bool)
    expected[20:40, 60:120] = True
    expected[100:102, 200:202] = True
    np.testing.assert_array_equal(mask, expected)


def test_editor_layer_portrait_and_no_alpha():
    # 200x300 (width x height) portrait image shown at 100x150; RGB layer without alpha.
    layer = np.zeros((150, 100, 3), dtype=np.uint8)
    layer[0:5, 0:3, 1] = 7
    mask = editor_layer_to_mask(layer, height_px=300, width_px=200)
    assert mask.shape == (300, 200)
    assert mask_bbox_xyxy_px(mask) == (0, 0, 6, 10)
    assert mask.sum() == 60
    # RGB layer with colour but zero alpha is not painted.
    transparent = np.zeros((150, 100, 4), dtype=np.uint8)
    transparent[..., :3] = 255
    assert not editor_layer_to_mask(transparent, height_px=300, width_px=200).any()
    with pytest.raises(UserInputError, match="drawing layer has shape"):
        editor_layer_to_mask(np.zeros(5), height_px=3, width_px=3)
