"""The left/right mirror check: which answers it reads, and how the two views vote."""

from __future__ import annotations

import math

import pytest

from medplib.side_tta import asks_for_a_side, other_side, side_vote


@pytest.mark.parametrize(
    ("question", "offers"),
    [
        ("Is the cyst on the left or right side of the image?", True),
        ("On which side of the image is the left lung, left or right?", True),
        ("RIGHT or LEFT?", True),
        ("Is the left kidney visible?", False),  # names a side, offers no choice
        ("Is the tumor in the upper or lower part?", False),
        ("Which is brighter, leftover or rightmost?", False),  # no side word on its own
    ],
)
def test_a_question_asks_for_a_side_when_it_offers_both(question, offers):
    assert asks_for_a_side(question) is offers


@pytest.mark.parametrize(
    ("answer", "other"),
    [
        ("Left", "Right"),
        ("right", "left"),
        ("RIGHT", "LEFT"),
        (" Left. ", "Right."),
        ("The left side.", None),  # a sentence is not re-weighed: only bare side words are
        ("Yes", None),
        ("", None),
    ],
)
def test_the_other_side_keeps_the_answers_case_and_stop(answer, other):
    assert other_side(answer) == other


def test_an_unsure_answer_follows_both_views():
    # Unsure on the image (0.5 for Left) and sure on the mirror of the other side: Right.
    vote = side_vote("Left", "Right", margin=0.5, mirror_margin=2.0, max_margin=2.0)
    assert vote.answer == "Right"
    assert vote.to_dict() == {
        "plain": "Left",
        "other": "Right",
        "margin": 0.5,
        "mirror_margin": 2.0,
        "answer": "Right",
    }
    # The mirror agrees with the image (its Left is the image's Right): kept.
    assert side_vote("Left", "Right", margin=0.5, mirror_margin=-1.0, max_margin=2.0).answer == (
        "Left"
    )
    # A tie keeps what was decoded.
    assert side_vote("Left", "Right", margin=0.5, mirror_margin=0.5, max_margin=2.0).answer == (
        "Left"
    )


def test_a_sure_answer_is_not_overturned_by_the_mirror():
    """A structure found by where it usually lies stays there in the mirror; the margin gate
    keeps such confident answers whatever the mirror says."""
    vote = side_vote("Right", "Left", margin=5.0, mirror_margin=6.0, max_margin=2.0)
    assert vote.answer == "Right" and vote.margin == 5.0
    assert side_vote("Right", "Left", margin=-2.0, mirror_margin=0.0, max_margin=2.0).answer == (
        "Right"
    )
    assert side_vote("Right", "Left", margin=-1.9, mirror_margin=0.0, max_margin=2.0).answer == (
        "Left"
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_margins_must_be_finite(bad):
    with pytest.raises(ValueError, match="finite"):
        side_vote("Left", "Right", margin=bad, mirror_margin=0.0, max_margin=2.0)
    with pytest.raises(ValueError, match="finite"):
        side_vote("Left", "Right", margin=0.0, mirror_margin=bad, max_margin=2.0)
