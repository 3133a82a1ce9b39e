"""Canvas values -> labelled regions in original pixels, and question references."""

from __future__ import annotations

import numpy as np
import pytest

from medplib.errors import UserInputError
from medplib.masks import decode_rle
from webapp.regions import (
    collect_regions,
    describe_region,
    question_for_display,
    resolve_references,
    shown_size,
    shown_to_original_rows,
)


def test_shown_size_fits_both_limits_and_never_enlarges():
    assert shown_size(300, 200, max_width_px=1024, max_height_px=560) == (300, 200)
    assert shown_size(4096, 2048, max_width_px=1024, max_height_px=560) == (1024, 512)
    assert shown_size(1000, 3000, max_width_px=1024, max_height_px=560) == (187, 560)


def test_rows_observed_from_the_prompter_map_to_the_same_pixels_at_full_size():
    # Rows recorded from a real drag and click on a 300x200 image shown at full size.
    rows = [[50.0, 40.0, 2.0, 150.0, 120.0, 3.0], [200.0, 60.0, 1.0, 0.0, 0.0, 4.0]]
    found = collect_regions(
        {"image": None, "points": rows}, None, original_wh=(300, 200), shown_wh=(300, 200)
    )
    assert found.regions == [
        {"kind": "box", "xyxy_px": [50.0, 40.0, 150.0, 120.0], "label": 1},
        {"kind": "point", "xy_px": [200.0, 60.0], "label": 2},
    ]


def test_rows_on_a_downscaled_copy_scale_per_axis_to_original_pixels():
    # A 3000x1000 image is shown as 1024x341: x scales by 3000/1024, y by 1000/341.
    shown = shown_size(3000, 1000, max_width_px=1024, max_height_px=560)
    assert shown == (1024, 341)
    rows = shown_to_original_rows(
        [[512.0, 170.5, 2.0, 1024.0, 341.0, 3.0]], shown_wh=shown, original_wh=(3000, 1000)
    )
    assert rows[0][0] == pytest.approx(1500.0) and rows[0][1] == pytest.approx(500.0)
    assert rows[0][3] == pytest.approx(3000.0) and rows[0][4] == pytest.approx(1000.0)
    assert rows[0][2] == 2.0 and rows[0][5] == 3.0


def test_negative_clicks_are_dropped_with_a_note_and_sketch_layers_become_masks():
    layer = np.zeros((20, 30, 4), dtype=np.uint8)  # the editor's layer on a half-size copy
    layer[5:10, 10:20, 3] = 255
    empty_layer = np.zeros((20, 30, 4), dtype=np.uint8)
    found = collect_regions(
        {"points": [[3.0, 4.0, 0.0, 0.0, 0.0, 4.0], [10.0, 10.0, 1.0, 0.0, 0.0, 4.0]]},
        {"background": None, "layers": [layer, empty_layer], "composite": None},
        original_wh=(60, 40),
        shown_wh=(30, 20),
    )
    assert [r["kind"] for r in found.regions] == ["point", "mask"]
    assert found.regions[0]["xy_px"] == [20.0, 20.0]
    mask = decode_rle(found.regions[1]["rle"])
    assert mask.shape == (40, 60)
    # Each painted layer pixel is a 2x2 block at original size.
    assert mask.sum() == 5 * 10 * 4 and mask[10:20, 20:40].all()
    assert len(found.notes) == 1 and "negative" in found.notes[0]


def test_a_box_outside_the_image_is_refused_with_its_region_number():
    with pytest.raises(UserInputError, match="Region 1"):
        collect_regions(
            {"points": [[400.0, 300.0, 2.0, 500.0, 350.0, 3.0]]},
            None,
            original_wh=(300, 200),
            shown_wh=(300, 200),
        )


REGIONS = [
    {"kind": "box", "xyxy_px": [0, 0, 10, 10], "label": 1},
    {"kind": "point", "xy_px": [5, 5], "label": 2},
    {"kind": "point", "xy_px": [7, 7], "label": 3},
]


def test_named_regions_are_ordered_as_the_question_names_them():
    resolved = resolve_references("Compare region 3 with Region #1.", REGIONS)
    assert resolved.text == "Compare <region> with <region>."
    assert [r["label"] for r in resolved.regions] == [3, 1]


def test_bare_tags_take_the_regions_no_number_names():
    resolved = resolve_references("Is <region> larger than region 1 or <region>?", REGIONS)
    assert resolved.text == "Is <region> larger than <region> or <region>?"
    assert [r["label"] for r in resolved.regions] == [2, 1, 3]


def test_a_question_without_references_gets_every_region_appended():
    resolved = resolve_references("What is shown?", REGIONS[:2])
    assert resolved.text == "What is shown? <region> <region>"
    assert [r["label"] for r in resolved.regions] == [1, 2]


def test_only_regions_drawn_since_the_last_question_are_appended():
    # Regions 1 and 2 were saved by an earlier question; region 3 is new.
    resolved = resolve_references("Please segment the liver.", REGIONS, implicit_from=3)
    assert resolved.text == "Please segment the liver. <region>"
    assert [r["label"] for r in resolved.regions] == [3]
    # Nothing new drawn: the question goes as written, with no region.
    alone = resolve_references("Please segment the liver.", REGIONS, implicit_from=4)
    assert (alone.text, alone.regions) == ("Please segment the liver.", [])
    # Saved regions are still sent when named.
    named = resolve_references("What is region 1?", REGIONS, implicit_from=4)
    assert [r["label"] for r in named.regions] == [1]


def test_references_that_cannot_be_met_are_errors():
    with pytest.raises(UserInputError, match="region 5"):
        resolve_references("What is in region 5?", REGIONS)
    with pytest.raises(UserInputError, match="no region is drawn"):
        resolve_references("What is <region>?", [])
    with pytest.raises(UserInputError, match="more <region> tags"):
        resolve_references("<region> <region>", REGIONS[:1])
    # Without regions, "region 2" is prose, left alone.
    assert resolve_references("Is region 2 of the liver", []).text == "Is region 2 of the liver"


def test_display_writes_tags_as_labels():
    shown = question_for_display("Compare <region></region> with <region>.", REGIONS[2:0:-1])
    assert shown == "Compare [region 3] with [region 2]."


def test_descriptions():
    assert describe_region(REGIONS[0]) == "region 1: box (0, 0)–(10, 10) px"
    assert describe_region({"kind": "point", "xy_px": [1.4, 2.6]}, 4) == (
        "region 4: point (1, 3) px"
    )


def test_saved_regions_come_first_unchanged_and_new_prompts_are_numbered_after():
    saved = [{"kind": "box", "xyxy_px": [1.25, 2.5, 7.75, 9.5], "label": 1}]
    found = collect_regions(
        {"points": [[10.0, 10.0, 1.0, 0.0, 0.0, 4.0]]},
        None,
        original_wh=(60, 40),
        shown_wh=(30, 20),
        saved=saved,
    )
    assert found.regions[0] == saved[0]  # never rounded through a canvas
    assert found.regions[1] == {"kind": "point", "xy_px": [20.0, 20.0], "label": 2}
