"""The presence check: which questions and answers it reads, and how the mask decides."""

from __future__ import annotations

import math

import pytest
import torch

from medplib.answer_check import needs_mask
from medplib.presence_check import (
    MASK_SCORE_THRESHOLD,
    mask_score,
    other_answer,
    presence_target,
    presence_vote,
)


@pytest.mark.parametrize(
    ("question", "structure"),
    [
        # Every form the corpus asks, singular and plural.
        ("Is there a polyp in this image?", "polyp"),
        ("<image>\nIs there an ulcer in this image?", "ulcer"),
        ("Is the optic disc visible in this image?", "optic disc"),
        ("Can you see a blue-white veil in this image?", "blue-white veil"),
        ("Does this image show a tumor?", "tumor"),
        ("Are there exudates in this image?", "exudates"),
        ("Are the dark globules visible in this image?", "dark globules"),
        ("Can you see nuclei in this image?", "nuclei"),
        ("Does this image show left rib 12?", "left rib 12"),
        # Typed by a person: other case, no "in this image", "any".
        ("is there any FLUID on this image ?", "FLUID"),
        ("Is the liver visible?", "liver"),
        ("Can you see the spleen?", "spleen"),
    ],
)
def test_presence_questions_name_their_structure(question, structure):
    assert presence_target(question) == structure


@pytest.mark.parametrize(
    "question",
    [
        "Does this image show a benign or a malignant tumor?",  # a choice, not yes/no
        # A diagnosis: the tumour's mask is the same, benign or malignant.
        "Does this image show a malignant tumor?",
        "Is there a benign tumor in this image?",
        "Is the spleen on the left or right side of the image?",
        "Is there <region></region> in this image?",
        "What imaging modality is this?",
        "Is there a polyp in this image? Where is it?",
        "Please generate a mask that segments the polyp in this image.",
        "",
    ],
)
def test_other_questions_are_not_presence_questions(question):
    assert presence_target(question) is None


@pytest.mark.parametrize(
    ("answer", "other"),
    [
        ("Yes", "No"),
        ("no", "yes"),
        ("YES", "NO"),
        (" No. ", "Yes."),
        ("Yes, there is.", None),  # only bare answers are re-weighed
        ("Left", None),
        ("", None),
    ],
)
def test_the_other_answer_keeps_case_and_stop(answer, other):
    assert other_answer(answer) == other


def test_the_mask_score_is_the_mean_probability_inside_the_cut():
    prob = torch.tensor([[0.95, 0.85, 0.2], [0.5, 0.1, 0.0]])
    # 0.5 itself is outside: the cut is strict, like the served masks'.
    assert MASK_SCORE_THRESHOLD == 0.5
    assert mask_score(prob) == pytest.approx(0.9)
    assert mask_score(prob, threshold=0.15) == pytest.approx((0.95 + 0.85 + 0.2 + 0.5) / 4)
    assert mask_score(torch.full((4, 4), 0.3)) == 0.0  # nothing drawn: no evidence


def test_an_unsure_answer_follows_the_mask():
    found = presence_vote(
        "No", "Yes", "polyp", margin=-0.3, mask_score=0.93, max_margin=0.5, min_mask_score=0.85
    )
    assert found.answer == "Yes" and found.plain == "No" and found.structure == "polyp"
    faint = presence_vote(
        "Yes.", "No.", "cyst", margin=0.2, mask_score=0.72, max_margin=0.5, min_mask_score=0.85
    )
    assert faint.answer == "No."
    # The mask agreeing with the answer keeps it.
    agreeing = presence_vote(
        "Yes", "No", "liver", margin=0.1, mask_score=0.85, max_margin=0.5, min_mask_score=0.85
    )
    assert agreeing.answer == "Yes"
    assert agreeing.to_dict() == {
        "plain": "Yes",
        "other": "No",
        "structure": "liver",
        "margin": 0.1,
        "mask_score": 0.85,
        "answer": "Yes",
    }


def test_a_confident_answer_is_kept_without_a_mask():
    assert not needs_mask(-0.5, max_margin=0.5)  # the bound is outside
    assert needs_mask(0.49, max_margin=0.5)
    vote = presence_vote(
        "No", "Yes", "nodule", margin=-2.0, mask_score=None, max_margin=0.5, min_mask_score=0.85
    )
    assert vote.answer == "No" and vote.mask_score is None


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_margin_that_is_not_a_number_is_refused(bad):
    with pytest.raises(ValueError, match="margin must be finite"):
        needs_mask(bad, max_margin=0.5)


@pytest.mark.parametrize("score", [None, -0.1, 1.5])
def test_an_unsure_answer_without_a_valid_mask_score_is_refused(score):
    with pytest.raises(ValueError, match="needs a mask score"):
        presence_vote(
            "No", "Yes", "polyp", margin=0.0, mask_score=score, max_margin=0.5, min_mask_score=0.85
        )


@pytest.mark.parametrize(
    ("name", "diagnosis"),
    [
        ("benign tumor", True),
        ("Malignant tumor", True),
        ("cancerous lesion", True),
        ("non-cancerous lesion", True),
        ("precancerous polyp", True),
        ("metastatic node", True),
        ("tumor", False),
        ("lymph node", False),
        # Whole words only: no diagnosis hides inside another word.
        ("benignity-free zone", False),
    ],
)
def test_names_carrying_a_diagnosis_are_not_checked(name, diagnosis):
    from medplib.answer_check import names_a_diagnosis, structure_name

    assert names_a_diagnosis(name) is diagnosis
    assert (structure_name(name) is None) is diagnosis
