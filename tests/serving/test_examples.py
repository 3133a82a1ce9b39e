"""The Ask page's example cases: deterministic synthetic scenes whose questions fit them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from serving.services.examples import EXAMPLES, example_case, example_png, example_scene


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
    assert len({example_png(i) for i in range(len(EXAMPLES))}) == len(EXAMPLES)
    assert len({case.filename for case in EXAMPLES}) == len(EXAMPLES)


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
