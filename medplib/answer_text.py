"""An answer's text for people: whitespace tidied, and where each `<SEG>` mask belongs.

The readable answer drops special tokens, so "It is the liver <SEG>." reads "It is the liver."
and an answer that is a bare mask reads ".". A page that shows the masks beside the text can
say where each one was produced instead: "It is the liver [mask 1]."
"""

from __future__ import annotations

import re

from medplib.tokenization import SEG_TOKEN


def clean_answer(text: str) -> str:
    """Collapse whitespace and drop spaces before punctuation left by removed tokens."""
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s+([.,;:!?])", r"\1", text)


def answer_with_mask_marks(answer: str, raw_answer: str | None) -> str:
    """`answer` with "[mask k]" where the k-th `<SEG>` of `raw_answer` stood (k from 1).

    Only where `raw_answer` is the same text with its `<SEG>` tokens: an answer a check
    replaced ("Yes" → "No"), or a raw answer holding other special tokens, is returned as
    it is, so the marks never put words in the model's mouth.
    """
    if not raw_answer or SEG_TOKEN not in raw_answer:
        return answer
    pieces = raw_answer.split(SEG_TOKEN)
    if clean_answer(" ".join(pieces)) != answer:
        return answer
    marked = pieces[0]
    for k, piece in enumerate(pieces[1:], start=1):
        marked += f" [mask {k}] {piece}"
    return clean_answer(marked)
