from __future__ import annotations

import json
import math

import numpy as np
import pytest

from medplib.errors import UserInputError
from medplib.geometry import (
    MAX_REGIONS,
    BoxPrompt,
    MaskPrompt,
    PointPrompt,
    document_to_masks,
    document_to_prompts,
    pad_box_centered,
    pad_offsets_centered,
    point_half_size_px,
    prompt_to_mask,
    prompts_to_document,
    resize_longest_side_shape,
    unpad_box_centered,
    validate_prompt,
)
from medplib.masks import encode_rle, mask_bbox_xyxy_px


def test_point_square_sizes_and_clipping():
    assert point_half_size_px(200, 300) == 20
    assert point_half_size_px(6000, 8192) == 171  # 8192 / 48 = 170.67
    assert point_half_size_px(1, 1) == 20
    large = prompt_to_mask(PointPrompt((0.0, 0.0)), height_px=6000, width_px=8192)
    assert mask_bbox_xyxy_px(large) == (0, 0, 172, 172)  # clipped at the top-left corner
    far = prompt_to_mask(PointPrompt((8192.0, 6000.0)), height_px=6000, width_px=8192)
    # A point on the bottom-right edge belongs to the last pixel (8191, 5999).
    assert mask_bbox_xyxy_px(far) == (8191 - 171, 5999 - 171, 8192, 6000)
    tiny = prompt_to_mask(PointPrompt((0.5, 0.5)), height_px=1, width_px=1)
    assert tiny.tolist() == [[True]]
    narrow = prompt_to_mask(PointPrompt((6.9, 2.1)), height_px=3, width_px=7)
    assert narrow.all()


def test_box_pixel_centre_convention():
    # 3x7 image (h=3, w=7). Pixel centres are at k + 0.5; [x0, x1) selects centres.
    mask = prompt_to_mask(BoxPrompt((2.6, 0.0, 4.4, 3.0)), height_px=3, width_px=7)
    assert mask_bbox_xyxy_px(mask) == (3, 0, 4, 3)
    mask = prompt_to_mask(BoxPrompt((2.5, 0.0, 4.5, 3.0)), height_px=3, width_px=7)
    assert mask_bbox_xyxy_px(mask) == (2, 0, 4, 3)  # 2.5 included, 4.5 excluded
    # Thinner than a pixel: the pixel holding the middle (0.3, 0.3) -> (0, 0).
    thin = prompt_to_mask(BoxPrompt((0.2, 0.2, 0.4, 0.4)), height_px=3, width_px=7)
    assert thin.sum() == 1 and thin[0, 0]
    whole = prompt_to_mask(BoxPrompt((0.0, 0.0, 1.0, 1.0)), height_px=1, width_px=1)
    assert whole.tolist() == [[True]]


def test_box_partly_outside_is_clipped():
    mask = prompt_to_mask(BoxPrompt((-50.0, 150.0, 20.0, 400.0)), height_px=200, width_px=300)
    assert mask_bbox_xyxy_px(mask) == (0, 150, 20, 200)
    validate_prompt(BoxPrompt((-50.0, 150.0, 20.0, 400.0)), height_px=200, width_px=300)


def test_validate_messages():
    cases = [
        (
            BoxPrompt((10, 10, 10, 50)),
            "Region 2: the box (10, 10, 10, 50) has zero width; draw a box with some area.",
        ),
        (BoxPrompt((10, 50, 40, 50)), "Region 2: the box (10, 50, 40, 50) has zero height"),
        (BoxPrompt((310, 10, 400, 50)), "Region 2: the box (310, 10, 400, 50) lies outside"),
        (BoxPrompt((-20, 10, 0, 50)), "lies outside the 300x200 px image"),
        (BoxPrompt((0, 0, math.nan, 5)), "not four finite numbers"),
        (PointPrompt((math.inf, 3.0)), "not two finite numbers"),
        (
            PointPrompt((301.0, 3.0)),
            "Region 2: the point (301, 3) lies outside the 300x200 px "
            "image; click inside the image.",
        ),
        (PointPrompt((-0.5, 3.0)), "lies outside"),
        (MaskPrompt(np.zeros((200, 300), dtype=bool)), "Region 2: the mask is empty"),
        (
            MaskPrompt(np.ones((300, 200), dtype=bool)),
            "the mask is 200x300 px but the image is 300x200 px",
        ),
    ]
    for prompt, message in cases:
        with pytest.raises(UserInputError) as info:
            validate_prompt(prompt, height_px=200, width_px=300, index=1)
        assert message in str(info.value)
    with pytest.raises(UserInputError, match="^the point"):
        validate_prompt(PointPrompt((400.0, 1.0)), height_px=200, width_px=300)


def test_mask_prompt_is_copied():
    source = np.zeros((3, 7), dtype=np.uint8)
    source[1, 2:5] = 9
    mask = prompt_to_mask(MaskPrompt(source), height_px=3, width_px=7)
    assert mask.dtype == bool and mask.sum() == 3
    mask[0, 0] = True
    assert source[0, 0] == 0


def test_document_round_trip_through_json():
    region = np.zeros((200, 300), dtype=bool)
    region[5:9, 7:30] = True
    prompts = [
        PointPrompt((200.0, 60.0)),
        BoxPrompt((50.0, 40.0, 150.0, 120.0)),
        MaskPrompt(region),
    ]
    doc = json.loads(json.dumps(prompts_to_document(prompts)))
    assert doc[0] == {"kind": "point", "xy_px": [200.0, 60.0]}
    assert doc[1] == {"kind": "box", "xyxy_px": [50.0, 40.0, 150.0, 120.0]}
    assert doc[2] == {"kind": "mask", "rle": encode_rle(region)}
    back = document_to_prompts(doc, height_px=200, width_px=300)
    assert back[:2] == prompts[:2]
    assert isinstance(back[2], MaskPrompt)
    np.testing.assert_array_equal(back[2].mask, region)
    masks = document_to_masks(doc, height_px=200, width_px=300)
    assert [int(m.sum()) for m in masks] == [41 * 41, 100 * 80, 4 * 23]


def test_document_errors():
    rle_small = encode_rle(np.ones((10, 10), dtype=bool))
    cases = [
        ({"kind": "point"}, "must be a JSON list"),
        ([{"kind": "circle"}], "Region 1: unknown kind 'circle'"),
        (["point"], "Region 1: each region must be a JSON object"),
        ([{"kind": "point", "xy_px": [1, 2, 3]}], '"xy_px" must be a list of 2 numbers'),
        ([{"kind": "point", "xy_px": ["1", 2]}], '"xy_px" must be a list of 2 numbers'),
        ([{"kind": "point", "xy_px": [True, 2]}], '"xy_px" must be a list of 2 numbers'),
        ([{"kind": "box", "xyxy_px": [1, 2, 3]}], '"xyxy_px" must be a list of 4 numbers'),
        ([{"kind": "box", "xyxy_px": [1, 2, float("nan"), 4]}], "NaN or infinity"),
        ([{"kind": "mask", "rle": rle_small}], "the mask is 10x10 px but the image is 300x200"),
        ([{"kind": "mask", "rle": {"size": [200, 300], "counts": [5]}}], "mask RLE is invalid"),
        ([{"kind": "mask"}], 'needs an "rle" object'),
        ([{"kind": "point", "xy_px": [1, 1]}] * (MAX_REGIONS + 1), "at most 32 are allowed"),
        (
            [{"kind": "point", "xy_px": [1, 1]}, {"kind": "box", "xyxy_px": [5, 5, 5, 9]}],
            "Region 2: the box (5, 5, 5, 9) has zero width",
        ),
    ]
    for doc, message in cases:
        with pytest.raises(UserInputError) as info:
            document_to_prompts(doc, height_px=200, width_px=300)
        assert message in str(info.value), str(info.value)
    assert len(document_to_prompts([], height_px=1, width_px=1)) == 0


def test_resize_longest_side_shape():
    assert resize_longest_side_shape((200, 300), 1024) == (683, 1024)  # 682.67 rounds up
    assert resize_longest_side_shape((300, 200), 336) == (336, 224)
    assert resize_longest_side_shape((6000, 8192), 336) == (246, 336)  # 246.09
    assert resize_longest_side_shape((1, 1), 256) == (256, 256)
    assert resize_longest_side_shape((3, 7), 10) == (4, 10)  # 4.29 -> 4
    assert resize_longest_side_shape((1, 2), 5) == (3, 5)  # 2.5 rounds half up


def test_pad_offsets_centered():
    assert pad_offsets_centered((224, 336), 336) == (56, 0)
    assert pad_offsets_centered((336, 224), 336) == (0, 56)
    assert pad_offsets_centered((3, 10), 10) == (3, 0)  # 7 rows of padding: 3 top, 4 bottom
    assert pad_offsets_centered((256, 256), 256) == (0, 0)
    with pytest.raises(ValueError, match="does not fit"):
        pad_offsets_centered((300, 10), 256)


def test_pad_and_unpad_box():
    # 300x200 image in a 336 square: scale 1.12, 56 px padding on top.
    padded = pad_box_centered((50, 40, 150, 120), original_hw=(200, 300), target=336)
    assert padded == pytest.approx((56.0, 100.8, 168.0, 190.4))
    back = unpad_box_centered(padded, original_hw=(200, 300), target=336)
    assert back == pytest.approx((50.0, 40.0, 150.0, 120.0))
    # The full padded image area maps to the whole original image; padding clips away.
    assert unpad_box_centered((0, 0, 336, 336), original_hw=(200, 300), target=336) == (
        pytest.approx((0.0, 0.0, 300.0, 200.0))
    )
    for hw in [(300, 200), (1, 1), (3, 7), (6000, 8192)]:
        box = (0.0, 0.0, float(hw[1]), float(hw[0]))
        square = pad_box_centered(box, original_hw=hw, target=256)
        assert min(square) >= 0 and max(square) <= 256
        assert unpad_box_centered(square, original_hw=hw, target=256) == pytest.approx(box)
