"""The Ask page's example cases: deterministic synthetic scenes whose questions fit them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from serving.services.examples import (
    EXAMPLES,
    example_box_xyxy_px,
    example_case,
    example_png,
    example_scene,
)


def test_each_example_is_a_stable_png_of_its_scene():
    for i, case in enumerate(EXAMPLES):
        data = example_png(i)
        example_png.cache_clear()
        assert example_png(i) == data  # drawn again from the seed, byte for byte
        decoded = np.asarray(Image.open(io.BytesIO(data)))
        scene = example_scene(i)
        assert scene.modality == case.modality
        np.testing.assert_array_equal(decoded, scene.image)
        assert decoded.shape == (128, 128, 3)
    # One scene may be asked about in two ways; different scenes never share an image or name.
    scenes = {(case.modality, case.seed) for case in EXAMPLES}
    assert len({example_png(i) for i in range(len(EXAMPLES))}) == len(scenes) > 1
    assert len({case.filename for case in EXAMPLES}) == len(scenes)


def test_a_segmentation_question_names_a_structure_of_its_scene():
    asked = [(i, c) for i, c in enumerate(EXAMPLES) if c.structure is not None]
    assert asked, "at least one example should ask for a mask"
    for i, case in asked:
        names = {o.name: o for o in example_scene(i).objects}
        assert case.structure in names, (case.label, sorted(names))
        assert f"the {case.structure} " in case.question
        assert names[case.structure].mask.sum() >= 0.004 * 128 * 128


@pytest.mark.parametrize("index", [-1, len(EXAMPLES)])
def test_an_unknown_example_number_is_refused_with_the_range(index):
    with pytest.raises(ValueError, match=f"there are {len(EXAMPLES)}"):
        example_case(index)


def test_a_region_example_boxes_a_structure_of_its_scene():
    boxed = [(i, c) for i, c in enumerate(EXAMPLES) if c.box_around is not None]
    assert boxed, "at least one example should ask about a region"
    for i, case in boxed:
        assert "region 1" in case.question
        mask = {o.name: o.mask for o in example_scene(i).objects}[case.box_around]
        x0, y0, x1, y1 = example_box_xyxy_px(i)
        assert mask[y0:y1, x0:x1].sum() == mask.sum()  # the whole structure is inside
        assert mask[y0, x0:x1].any() and mask[y1 - 1, x0:x1].any()  # and the box is tight
        assert mask[y0:y1, x0].any() and mask[y0:y1, x1 - 1].any()
    assert all(example_box_xyxy_px(i) is None for i, c in enumerate(EXAMPLES) if not c.box_around)
