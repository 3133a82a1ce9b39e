"""Mirror check for closed left/right answers, as pure functions on answer log-probabilities.

Asked on which side of the image a structure lies, a small model can lean towards one side
whatever it sees (the demo checkpoint said "Left" for many ultrasound cysts on the right). On the
left-right mirrored image the right answer swaps, but such a lean does not, so weighing the two
answers on both views cancels it:

    vote = margin - mirror_margin,  margin = log p(answer | image) - log p(other | image)

(`mirror_margin` is the same difference on the mirrored image, where evidence for "Left" is
evidence for "Right" on the image itself). The vote only decides where the model is unsure,
|margin| < `max_margin`: structures found by where they usually lie ("the liver", "the left
lung") are answered confidently and stay on their side in the mirror, so a vote there would
flip right answers (on the demo's val side questions, 49 of the 53 right answers an
unconditional vote flipped had a margin above 4).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from medplib.answer_check import swap_bare_answer

_OTHER_SIDE = {"left": "right", "right": "left"}
_SIDE_WORD = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def asks_for_a_side(question: str) -> bool:
    """Whether the question offers both sides ("… on the left or right side?")."""
    return {w.lower() for w in _SIDE_WORD.findall(question)} == {"left", "right"}


def other_side(answer: str) -> str | None:
    """The answer naming the other side, in the same case and with the same final stop; None
    unless the answer is a bare side word ("Left", "right.")."""
    return swap_bare_answer(answer, _OTHER_SIDE)


@dataclass(frozen=True)
class SideVote:
    """How a left/right answer was checked against the mirrored image."""

    plain: str  # the answer decoded on the image
    other: str  # the answer naming the other side
    margin: float  # log p(plain) - log p(other), on the image
    mirror_margin: float  # the same, on the mirrored image
    answer: str  # what is answered: `plain`, or `other` when the vote overturned it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def side_vote(
    plain: str, other: str, *, margin: float, mirror_margin: float, max_margin: float
) -> SideVote:
    """The checked answer: `other` when the model is unsure on the image (|margin| <
    `max_margin`) and the two views together favour it (margin - mirror_margin < 0)."""
    if not (math.isfinite(margin) and math.isfinite(mirror_margin)):
        raise ValueError(f"margins must be finite, got {margin!r} and {mirror_margin!r}")
    overturned = abs(margin) < max_margin and margin - mirror_margin < 0
    return SideVote(plain, other, margin, mirror_margin, other if overturned else plain)
