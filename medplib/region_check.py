"""Grounding check for unsure yes/no answers to "Is the region … the X?", as pure functions.

Asked whether a marked region is a named structure, a small model can check only that the
structure is in the image: the demo checkpoint answered "Yes" about as often for a neighbour's
region as for the structure's own. Its grounding expert, asked to outline the structure, draws
it where it is, so the mask can tell whether the region lies on it:

    coverage = |region ∩ mask| / |region|
    answer = "Yes" if coverage >= min_coverage else "No",  when |margin| < max_margin

with the mask cut at `MASK_THRESHOLD` (an empty mask, or none drawn, covers nothing). Coverage
is read from the region's side so that a point, a box around the structure and a drawn
outline are judged alike: a point on the structure is covered whole, and a box is covered by
the share of it the structure fills.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from medplib.presence_check import is_yes, needs_mask

MASK_THRESHOLD = 0.5  # the mask is cut here whatever threshold the served masks use
_TAG = re.compile(r"</?region>", re.IGNORECASE)
_ARTICLE = r"(?:the|a|an)\s+"
_VERIFY = re.compile(
    r"\s*(?:<image>\s*)?(?:"
    rf"is\s+(?:the|this)\s+(?:region|area)\s+{_ARTICLE}(?P<a>.+?)"
    rf"|does\s+(?:the|this)\s+(?:region|area)\s+show\s+{_ARTICLE}(?P<b>.+?)"
    rf"|is\s+this\s+{_ARTICLE}(?P<c>.+?)"
    r")\s*\?\s*",
    re.IGNORECASE,
)


def region_target(question: str) -> str | None:
    """The structure a question about one marked region asks it to be ("Is the region
    <region></region> the heart?" → "heart"), or None for any other question."""
    if len(re.findall(r"<region>", question, re.IGNORECASE)) != 1:
        return None
    m = _VERIFY.fullmatch(re.sub(r"\s+", " ", _TAG.sub(" ", question)))
    if m is None:
        return None
    name = next(g for g in m.groups() if g is not None).strip()
    # A choice ("the liver or the spleen") is not a yes/no question.
    if not name or "<" in name or "?" in name or re.search(r"\bor\b", name, re.IGNORECASE):
        return None
    return name


def region_coverage(mask: np.ndarray, region: np.ndarray) -> float:
    """Share of the `region`'s pixels inside `mask` (both bool (H, W)); 0.0 for an empty
    region."""
    if mask.shape != region.shape:
        raise ValueError(f"mask {mask.shape} and region {region.shape} differ in size")
    size = int(region.sum())
    return float((mask & region).sum()) / size if size else 0.0


@dataclass(frozen=True)
class RegionVote:
    """How a yes/no answer about a marked region was checked against the structure's mask."""

    plain: str  # the answer decoded on the image
    other: str  # the opposite answer
    structure: str  # what the region is asked to be
    margin: float  # log p(plain) - log p(other)
    # Share of the region inside the structure's mask; None when the margin was large enough
    # that no mask was drawn.
    coverage: float | None
    answer: str  # what is answered: `plain`, or `other` when the mask overturned it

    def to_dict(self) -> dict[str, Any]:
        return {
            "plain": self.plain,
            "other": self.other,
            "structure": self.structure,
            "margin": self.margin,
            "coverage": self.coverage,
            "answer": self.answer,
        }


def region_vote(
    plain: str,
    other: str,
    structure: str,
    *,
    margin: float,
    coverage: float | None,
    max_margin: float,
    min_coverage: float,
) -> RegionVote:
    """The checked answer. Where `needs_mask(margin)`, "Yes" when the structure's mask covers
    at least `min_coverage` of the region, else "No" (in the case and stop of `plain`);
    otherwise `plain`."""
    if not needs_mask(margin, max_margin=max_margin):
        return RegionVote(plain, other, structure, margin, coverage, plain)
    if coverage is None or not (0.0 <= coverage <= 1.0) or math.isnan(coverage):
        raise ValueError(f"an unsure answer needs a coverage in [0, 1], got {coverage!r}")
    says_yes = coverage >= min_coverage
    answer = plain if is_yes(plain) == says_yes else other
    return RegionVote(plain, other, structure, margin, coverage, answer)
