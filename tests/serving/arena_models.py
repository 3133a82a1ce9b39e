"""Stand-in models of known quality for arena tests, loaded through the predictor plug-in
(``MEDPLIB_PREDICTOR=tests.serving.arena_models:stand_in``; the checkpoint path picks one).

Each image holds one bright square on a dark ground (`square_png`). The strong model masks
the square exactly; the weak one masks a square of the same size shifted by half its side,
so its Dice against the truth is 0.5.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from serving.predictors import EchoMask, NoopPrediction

SIDE_PX = 12


def square_png(x: int, y: int, *, size: int = 48) -> bytes:
    """A (size, size) RGB PNG: dark, with a bright SIDE_PX square at (x, y)."""
    pixels = np.full((size, size, 3), 20, dtype=np.uint8)
    pixels[y : y + SIDE_PX, x : x + SIDE_PX] = 230
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def truth_of(image: np.ndarray) -> np.ndarray:
    """The square, as a bool (H, W) mask."""
    return np.asarray(image)[..., 0] > 128


@dataclass
class StandIn:
    quality: str  # "strong" or "weak"
    checkpoint_id: str = ""
    _image: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 3), np.uint8))

    def __post_init__(self) -> None:
        self.checkpoint_id = f"stand-in-{self.quality}"

    def set_image(self, image: np.ndarray) -> None:
        self._image = image

    def ask(
        self, question: str, regions: Sequence[np.ndarray] = (), history=(), **_: object
    ) -> NoopPrediction:
        mask = truth_of(self._image)
        if self.quality == "weak":
            mask = np.roll(mask, SIDE_PX // 2, axis=1)
        # The same words from both: the voter judges the masks alone.
        return NoopPrediction(
            answer="It is here [SEG].",
            raw_answer="It is here <SEG>.",
            masks=[EchoMask(mask=mask, score=0.9)],
        )


def stand_in(*, checkpoint: str, device: str) -> StandIn:
    if checkpoint not in ("strong", "weak"):
        raise ValueError(f"no stand-in model {checkpoint!r}")
    return StandIn(quality=checkpoint)
