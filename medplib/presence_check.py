"""Grounding check for unsure yes/no answers to "Is there a … in this image?", as pure functions.

A small model asked whether a finding is present can answer from the name alone: on the demo
checkpoint's val questions it gave the same "No" margin to every synthetic CT "nodule", there
or not, and small findings (fundus exudates, dermoscopy globules) were mostly reported absent.
Its grounding expert, asked to outline the same structure, looks at the image: where the
structure is there it draws a confident mask, where it is not the mask is faint or empty. So
where the yes/no margin is small, the answer follows the mask instead:

    answer = "Yes" if mask_score >= min_mask_score else "No",  when |margin| < max_margin

with `margin = log p(plain) - log p(other)` on the image and `mask_score` the mean sigmoid
probability inside the mask cut at `MASK_SCORE_THRESHOLD` (0 when the mask is empty or the
model drew none). Confident answers are kept: findings that only the text names (benign vs
malignant) have no mask to tell them apart.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import torch

from medplib.answer_check import (
    MASK_THRESHOLD,
    YES_NO,
    decide_by_mask,
    structure_name,
    swap_bare_answer,
)

MASK_SCORE_THRESHOLD = MASK_THRESHOLD  # where the mask is cut to score it

_ARTICLE = r"(?:(?:a|an|the|any)\s+)?"
# The question forms of the corpus (`medplib.data.questions`), singular and plural; the
# structure is the words between the form's opening and its ending.
_PRESENCE = re.compile(
    r"\s*(?:<image>\s*)?(?:"
    rf"(?:is|are)\s+there\s+{_ARTICLE}(?P<a>.+?)\s+(?:in|on)\s+this\s+image"
    rf"|(?:is|are)\s+the\s+(?P<b>.+?)\s+visible(?:\s+in\s+this\s+image)?"
    rf"|can\s+you\s+see\s+{_ARTICLE}(?P<c>.+?)(?:\s+in\s+this\s+image)?"
    rf"|does\s+(?:this|the)\s+image\s+show\s+{_ARTICLE}(?P<d>.+?)"
    r")\s*\?\s*",
    re.IGNORECASE,
)


def presence_target(question: str) -> str | None:
    """The structure a presence question asks about ("Is there a polyp in this image?" →
    "polyp"), or None for any other question."""
    m = _PRESENCE.fullmatch(question)
    if m is None:
        return None
    return structure_name(next(g for g in m.groups() if g is not None))


def other_answer(answer: str) -> str | None:
    """The opposite of a bare "Yes"/"No" answer, in the same case and with the same final stop;
    None for any other answer."""
    return swap_bare_answer(answer, YES_NO)


def mask_score(prob: torch.Tensor, threshold: float = MASK_SCORE_THRESHOLD) -> float:
    """Mean of the sigmoid probabilities `prob` inside `prob > threshold`; 0.0 when none pass."""
    inside = prob[prob > threshold]
    return float(inside.mean()) if inside.numel() else 0.0


@dataclass(frozen=True)
class PresenceVote:
    """How a yes/no presence answer was checked against the structure's mask."""

    plain: str  # the answer decoded on the image
    other: str  # the opposite answer
    structure: str  # what the question asks about
    margin: float  # log p(plain) - log p(other), on the image
    # Mean probability inside the structure's mask (cut at MASK_SCORE_THRESHOLD); None when the
    # margin was large enough that no mask was drawn.
    mask_score: float | None
    answer: str  # what is answered: `plain`, or `other` when the mask overturned it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def presence_vote(
    plain: str,
    other: str,
    structure: str,
    *,
    margin: float,
    mask_score: float | None,
    max_margin: float,
    min_mask_score: float,
) -> PresenceVote:
    """The checked answer. Where `needs_mask(margin)`, "Yes" when `mask_score` reaches
    `min_mask_score`, else "No" (in the case and stop of `plain`); otherwise `plain`."""
    answer = decide_by_mask(
        plain,
        other,
        margin=margin,
        evidence=mask_score,
        max_margin=max_margin,
        min_evidence=min_mask_score,
        evidence_name="mask score",
    )
    return PresenceVote(plain, other, structure, margin, mask_score, answer)
