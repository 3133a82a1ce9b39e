"""The region check: which questions it reads, and how the mask's cover of the region decides."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medplib.region_check import region_coverage, region_target, region_vote


@pytest.mark.parametrize(
    ("question", "structure"),
    [
        # The corpus's forms, with the tag as the predictor normalises it.
        ("<image>\nIs the region <region></region> the heart?", "heart"),
        ("Does the area <region></region> show the left kidney?", "left kidney"),
        # Typed by a person with a point or box: the tag appended at the end, other articles.
        ("Is this the liver? <region></region>", "liver"),
        ("is this region a polyp ? <region></region>", "polyp"),
        ("Does this area show an ulcer? <region></region>", "ulcer"),
    ],
)
def test_questions_about_one_region_name_their_structure(question, structure):
    assert region_target(question) == structure


@pytest.mark.parametrize(
    "question",
    [
        "Is the region <region></region> on the left?",  # no structure named after an article
        "Is the region <region></region> the liver or the spleen?",  # a choice
        "Is the region <region></region> the malignant tumor?",  # a diagnosis
        "Does the area <region></region> show the Benign Tumor?",
        "Is the region <region></region> the same as <region></region>?",  # two regions
        "What is <region></region>?",
        "Is this the liver?",  # no region
        "Is there a polyp in this image?",
    ],
)
def test_other_questions_are_not_checked(question):
    assert region_target(question) is None


def test_coverage_is_read_from_the_regions_side():
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:6, 2:6] = True  # 16 px
    point = np.zeros_like(mask)
    point[3, 3] = True
    assert region_coverage(mask, point) == 1.0  # a point on the structure is covered whole
    box = np.zeros_like(mask)
    box[2:10, 2:6] = True  # 32 px, half of it on the structure
    assert region_coverage(mask, box) == 0.5
    elsewhere = np.zeros_like(mask)
    elsewhere[8:, 8:] = True
    assert region_coverage(mask, elsewhere) == 0.0
    assert region_coverage(mask, np.zeros_like(mask)) == 0.0
    with pytest.raises(ValueError, match="differ in size"):
        region_coverage(mask, np.zeros((5, 10), dtype=bool))


def test_an_unsure_answer_follows_the_coverage():
    kwargs = {"max_margin": 4.0, "min_coverage": 0.5}
    neighbour = region_vote("Yes", "No", "heart", margin=1.2, coverage=0.02, **kwargs)
    assert neighbour.answer == "No" and neighbour.plain == "Yes"
    own = region_vote("no.", "yes.", "nodule", margin=0.3, coverage=0.5, **kwargs)
    assert own.answer == "yes."
    agreeing = region_vote("Yes", "No", "liver", margin=-3.9, coverage=0.9, **kwargs)
    assert agreeing.answer == "Yes"
    assert agreeing.to_dict() == {
        "plain": "Yes",
        "other": "No",
        "structure": "liver",
        "margin": -3.9,
        "coverage": 0.9,
        "answer": "Yes",
    }


def test_a_confident_answer_is_kept_without_a_mask():
    vote = region_vote(
        "Yes", "No", "liver", margin=4.0, coverage=None, max_margin=4.0, min_coverage=0.5
    )
    assert vote.answer == "Yes" and vote.coverage is None


@pytest.mark.parametrize("coverage", [None, -0.1, 1.1, math.nan])
def test_an_unsure_answer_without_a_valid_coverage_is_refused(coverage):
    with pytest.raises(ValueError, match="needs a coverage"):
        region_vote(
            "Yes", "No", "liver", margin=0.0, coverage=coverage, max_margin=4.0, min_coverage=0.5
        )
