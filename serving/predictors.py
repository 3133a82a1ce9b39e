"""The model behind the jobs: loaded once per process, behind a small protocol."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

Progress = Callable[[str, float], None]
# Called with the answer so far while it is generated (display only; the result is the record).
TextSink = Callable[[str], None]


class MaskResult(Protocol):
    """One returned mask: (H, W) at the original image size, and the model's confidence.

    A mask may also carry ``mirror_agreement`` (float or None, as `medplib.predictor.PredictedMask`
    does); it is stored when present. It is not a member here, so a predictor written before it
    still conforms.
    """

    @property
    def mask(self) -> np.ndarray: ...
    @property
    def score(self) -> float | None: ...


class RoutingResult(Protocol):
    """Which expert handled which tokens, as stored on the turn (`RoutingStats.to_dict`)."""

    def to_dict(self) -> dict[str, Any]: ...


class PredictionResult(Protocol):
    """What a predictor's ``ask`` returns; `medplib.predictor.Prediction` is one.

    Read-only members, so a predictor may return a subtype (a list of its own mask type,
    no routing at all).
    """

    @property
    def answer(self) -> str: ...  # as shown: special tokens removed
    @property
    def raw_answer(self) -> str: ...  # as decoded, special tokens kept
    @property
    def masks(self) -> Sequence[MaskResult]: ...  # one per <SEG>, in order
    @property
    def routing(self) -> RoutingResult | None: ...
    @property
    def timings(self) -> Mapping[str, float]: ...  # seconds per phase
    @property
    def warnings(self) -> Sequence[str]: ...


class Predictor(Protocol):
    checkpoint_id: str

    def set_image(self, image: np.ndarray) -> None: ...

    def ask(
        self,
        question: str,
        regions: Sequence[np.ndarray] = (),
        history: Sequence[tuple[str, str]] = (),
        *,
        progress: Progress | None = None,
        on_text: TextSink | None = None,
    ) -> PredictionResult: ...


@dataclass
class EchoMask:
    mask: np.ndarray
    score: float | None = None
    mirror_agreement: float | None = None


@dataclass
class NoopPrediction:
    answer: str
    raw_answer: str
    masks: list[EchoMask] = field(default_factory=list)
    routing: RoutingResult | None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class NoopPredictor:
    """Answers instantly without a model: measures the platform's own overhead.

    It echoes the question and returns the given regions as masks, so every storage
    path (answers, masks, artefacts) is exercised without a model. With a delay it streams
    its answer a word at a time across the delay, as a model generating tokens would.
    """

    checkpoint_id = "noop"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self._shape: tuple[int, ...] = ()

    def set_image(self, image: np.ndarray) -> None:
        self._shape = image.shape

    def ask(
        self,
        question: str,
        regions: Sequence[np.ndarray] = (),
        history: Sequence[tuple[str, str]] = (),
        *,
        progress: Progress | None = None,
        on_text: TextSink | None = None,
    ) -> NoopPrediction:
        start = time.perf_counter()
        answer = f"noop answer to: {question[:40]}"
        words = answer.split(" ")
        for n in range(1, len(words) + 1):
            if self.delay_s:
                time.sleep(self.delay_s / len(words))
            if on_text is not None:
                on_text(" ".join(words[:n]))
        return NoopPrediction(
            answer=answer,
            raw_answer=answer,
            masks=[EchoMask(mask=np.asarray(r, dtype=bool), score=1.0) for r in regions],
            timings={"total": time.perf_counter() - start},
        )


def load_predictor(
    kind: str, *, checkpoint: str, device: str, noop_delay_s: float = 0.0
) -> Predictor:
    if kind == "noop":
        return NoopPredictor(delay_s=noop_delay_s)
    if ":" in kind:
        import importlib

        module, _, attr = kind.partition(":")
        factory = getattr(importlib.import_module(module), attr)
        return factory(checkpoint=checkpoint, device=device)  # type: ignore[no-any-return]
    from medplib.predictor import MedPLIBPredictor

    return MedPLIBPredictor.from_pretrained(checkpoint or None, device=device)


class PredictorHolder:
    """One predictor per process, created on first use (or eagerly at worker start).

    It also remembers which image is encoded, so follow-up questions on the same image
    reuse the cached encoding.
    """

    def __init__(self, factory: Callable[[], Predictor]) -> None:
        self._factory = factory
        self._predictor: Predictor | None = None
        self._image_key: str | None = None
        self._lock = threading.Lock()

    def get(self) -> Predictor:
        with self._lock:
            if self._predictor is None:
                self._predictor = self._factory()
            return self._predictor

    def prepare(self, image_key: str, load: Callable[[], np.ndarray]) -> Predictor:
        predictor = self.get()
        if self._image_key != image_key:
            self._image_key = None
            predictor.set_image(load())
            self._image_key = image_key
        return predictor
