"""Grounding check for unsure yes/no answers to "Is the region … the X?", as pure functions.

Asked whether a marked region is a named structure, a small model can check only that the
structure is in the image: the demo checkpoint answered "Yes" about as often for a neighbour's
region as for the structure's own. Its grounding expert, asked to outline the structure, draws
it where it is, so the mask can tell whether the region lies on it:

    coverage = |region ∩ mask| / |region|
    answer = "Yes" if coverage >= min_coverage else "No",  when |margin| < max_margin

with the mask cut at `medplib.answer_check.MASK_THRESHOLD` (an empty mask, or none drawn,
covers nothing). Coverage is read from the region's side so that a point, a box around the
structure and a drawn outline are judged alike: a point on the structure is covered whole, and a box is covered by
the share of it the structure fills.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medplib.answer_check import decide_by_mask, structure_name

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
    return structure_name(next(g for g in m.groups() if g is not None))


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
        return asdict(self)


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
    answer = decide_by_mask(
        plain,
        other,
        margin=margin,
        evidence=coverage,
        max_margin=max_margin,
        min_evidence=min_coverage,
        evidence_name="coverage",
    )
    return RegionVote(plain, other, structure, margin, coverage, answer)
