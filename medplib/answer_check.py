"""What the answer checks share, as pure functions: bare one-word answers and their opposites,
the structure a question names, and how a mask decides an unsure yes/no answer.

The checks (`medplib.side_tta`, `medplib.presence_check`, `medplib.region_check`) re-weigh only
bare answers ("Yes", "left."): a sentence says more than one word could be swapped for.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

# The checks cut the structure's mask here, whatever threshold the served masks use: evaluation
# cuts masks at the official 0.1, which would make the same mask larger and its score lower.
MASK_THRESHOLD = 0.5
_BARE = re.compile(r"\s*([a-z]+)([.!]?)\s*", re.IGNORECASE)
YES_NO = {"yes": "no", "no": "yes"}


def swap_bare_answer(answer: str, opposites: Mapping[str, str]) -> str | None:
    """The opposite of a bare one-word answer found in `opposites` (lower-case word → its
    opposite), in the same case and with the same final stop; None for any other answer."""
    m = _BARE.fullmatch(answer)
    if m is None or m.group(1).lower() not in opposites:
        return None
    word, stop = m.group(1), m.group(2)
    other = opposites[word.lower()]
    if word.isupper():
        other = other.upper()
    elif word[0].isupper():
        other = other.capitalize()
    return other + stop


def is_yes(answer: str) -> bool:
    """Whether a bare yes/no answer says yes."""
    return answer.strip(" .!").lower() == "yes"


# A mask shows where a structure is, not what it is diagnosed as: asked to outline "the
# malignant tumor", the grounding expert outlines the tumour, benign or not.
_DIAGNOSIS = re.compile(
    r"\b(?:benign|malignant|(?:pre|non-?)?cancerous|metastatic)\b", re.IGNORECASE
)


def names_a_diagnosis(name: str) -> bool:
    """Whether a structure name carries a diagnosis ("benign tumor"), which no mask can check."""
    return _DIAGNOSIS.search(name) is not None


def structure_name(words: str) -> str | None:
    """`words` as the name of one structure a mask can check, or None when they are not one:
    empty, holding a region tag or a second question, a choice ("a benign or a malignant
    tumor"), or a name carrying a diagnosis ("the malignant tumor")."""
    name = words.strip()
    if not name or "<" in name or "?" in name or re.search(r"\bor\b", name, re.IGNORECASE):
        return None
    if names_a_diagnosis(name):
        return None
    return name


def needs_mask(margin: float, *, max_margin: float) -> bool:
    """Whether the model is unsure enough (|margin| < `max_margin`) for the mask to decide."""
    if not math.isfinite(margin):
        raise ValueError(f"margin must be finite, got {margin!r}")
    return abs(margin) < max_margin


def decide_by_mask(
    plain: str,
    other: str,
    *,
    margin: float,
    evidence: float | None,
    max_margin: float,
    min_evidence: float,
    evidence_name: str,
) -> str:
    """The checked yes/no answer: where `needs_mask(margin)`, "Yes" when the mask's `evidence`
    (a number in [0, 1]) reaches `min_evidence`, else "No", in the case and stop of `plain`;
    otherwise `plain`."""
    if not needs_mask(margin, max_margin=max_margin):
        return plain
    if evidence is None or not (0.0 <= evidence <= 1.0):
        raise ValueError(f"an unsure answer needs a {evidence_name} in [0, 1], got {evidence!r}")
    return plain if is_yes(plain) == (evidence >= min_evidence) else other
