"""Answer text for people: tidied, with "[mask k]" where each <SEG> was produced."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from medplib.answer_text import answer_with_mask_marks, clean_answer


@pytest.mark.parametrize(
    ("raw", "answer", "marked"),
    [
        (
            "Here is the left kidney: <SEG>.",
            "Here is the left kidney:.",
            "Here is the left kidney: [mask 1].",
        ),
        ("It is the liver <SEG>.", "It is the liver.", "It is the liver [mask 1]."),
        ("<SEG>.", ".", "[mask 1]."),
        (
            "The liver <SEG> and the spleen <SEG>, both normal.",
            "The liver and the spleen, both normal.",
            "The liver [mask 1] and the spleen [mask 2], both normal.",
        ),
        ("Masks:<SEG><SEG>", "Masks:", "Masks: [mask 1] [mask 2]"),
    ],
)
def test_each_seg_becomes_a_numbered_mark_in_place(raw, answer, marked):
    assert clean_answer(raw.replace("<SEG>", " ")) == answer  # the readable answer as decoded
    assert answer_with_mask_marks(answer, raw) == marked


def test_an_answer_without_seg_or_raw_text_is_left_alone():
    assert answer_with_mask_marks("Yes", "Yes") == "Yes"
    assert answer_with_mask_marks("Yes", None) == "Yes"
    assert answer_with_mask_marks("Yes", "") == "Yes"


def test_an_answer_a_check_replaced_keeps_its_own_text():
    # The presence check turned the model's "Yes <SEG>." into "No": no mark may bring the
    # model's words back.
    assert answer_with_mask_marks("No", "Yes <SEG>.") == "No"
    # Raw text holding anything the readable answer dropped besides <SEG> is not guessed at.
    assert answer_with_mask_marks("It is.", "It is <im_start> <SEG>.") == "It is."


def test_clean_answer_collapses_whitespace_and_spaces_before_punctuation():
    assert clean_answer(" It\n is   the liver , see . ") == "It is the liver, see."


def test_the_shipped_checkpoint_answers_get_one_mark_per_mask():
    # Answer pairs the shipped checkpoint gave (readable and raw, as decoded by its tokenizer).
    record = json.loads((Path(__file__).parent / "fixtures" / "tiny_demo_answers.json").read_text())
    marked = 0
    for entry in record["entries"]:
        shown = answer_with_mask_marks(entry["answer"], entry["raw_answer"])
        n = entry["raw_answer"].count("<SEG>")
        assert n == len(entry["masks"])
        assert re.findall(r"\[mask (\d+)\]", shown) == [str(k) for k in range(1, n + 1)]
        assert clean_answer(re.sub(r"\[mask \d+\]", " ", shown)) == entry["answer"]
        marked += n > 0
    assert marked >= 10
