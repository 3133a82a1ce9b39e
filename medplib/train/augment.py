"""Random changes to training records that keep every answer true.

Each change is a pure function of the record and a NumPy generator; `augment_record` picks
them with the probabilities of an `AugmentSection`. The trainer seeds the generator from
(seed, micro-batch, rank, position), so a resumed run sees the same changed images.

What keeps the answers true:
- intensity (gamma, contrast, inverting a greyscale image) moves no pixel, so masks, sides,
  heights and sizes stay as they are;
- a left-right mirror is applied only when no question or answer of the record names a side
  ("left", "right"): mirrored, the left kidney would lie where the right one does;
- zooming out shrinks the image about its centre onto a border of its own edge colour, so
  every structure keeps its side, its height and its size relative to the others.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from medplib.data.mecovqa import LoadedSample, LoadedTurn
from medplib.masks import resize_mask_nearest

if TYPE_CHECKING:
    from medplib.train.config import AugmentSection

_SIDE_WORDS = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def names_a_side(record: LoadedSample) -> bool:
    """True when any question or answer of the record says "left" or "right"."""
    return any(_SIDE_WORDS.search(t.question) or _SIDE_WORDS.search(t.answer) for t in record.turns)


def is_greyscale(image: np.ndarray) -> bool:
    """(H, W, 3) uint8 with equal channels: CT, MR, X-ray and ultrasound as the corpus stores them."""
    return bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())


def adjust_intensity(image: np.ndarray, gamma: float, contrast: float) -> np.ndarray:
    """(H, W, 3) uint8 → the same with grey levels raised to `gamma`, then stretched by
    `contrast` about their mean (1.0 and 1.0 leave the image unchanged)."""
    x = image.astype(np.float32) / 255.0
    x = np.power(x, gamma)
    mean = float(x.mean())
    x = (x - mean) * contrast + mean
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def invert(image: np.ndarray) -> np.ndarray:
    """Dark ↔ bright: CT shows fat dark and bone bright, many MR sequences the other way round."""
    return 255 - image


def mirror(record: LoadedSample) -> LoadedSample:
    """The record mirrored left ↔ right: image, region masks and target masks alike."""
    return _map_pixels(record, lambda a: np.ascontiguousarray(a[:, ::-1]))


def zoom_out(record: LoadedSample, scale: float) -> LoadedSample:
    """The record shrunk by `scale` (0 < scale ≤ 1) about its centre, keeping its size.

    The border takes the median colour of the image's outermost pixels, which is the
    background (air, gel, black outside the field of view) in nearly every medical image.
    """
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"zoom-out scale must lie in (0, 1], got {scale}")
    h, w = record.image.shape[:2]
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = (h - new_h) // 2, (w - new_w) // 2
    edge = np.concatenate(
        [record.image[0], record.image[-1], record.image[:, 0], record.image[:, -1]]
    )  # (2H + 2W, 3)
    fill = np.median(edge, axis=0).astype(np.uint8)

    def place(a: np.ndarray) -> np.ndarray:
        if a.dtype == bool:
            out = np.zeros((h, w), dtype=bool)
            out[top : top + new_h, left : left + new_w] = resize_mask_nearest(a, (new_h, new_w))
            return out
        small = np.asarray(Image.fromarray(a).resize((new_w, new_h), Image.Resampling.BILINEAR))
        out = np.empty_like(a)
        out[...] = fill
        out[top : top + new_h, left : left + new_w] = small
        return out

    return _map_pixels(record, place)


def _map_pixels(record: LoadedSample, fn: Callable[[np.ndarray], np.ndarray]) -> LoadedSample:
    turns = tuple(
        LoadedTurn(
            question=t.question,
            answer=t.answer,
            region_masks=tuple(fn(m) for m in t.region_masks),
            target_masks=tuple(fn(m) for m in t.target_masks),
        )
        for t in record.turns
    )
    return dataclasses.replace(record, image=fn(record.image), turns=turns)


def augment_record(
    record: LoadedSample, settings: AugmentSection, rng: np.random.Generator
) -> LoadedSample:
    """`record`, or a changed copy of it, drawn with `settings`.

    Seven numbers are drawn whatever applies, so the changes of one record never shift
    those of the next when one generator serves several.
    """
    draws = rng.random(7)
    source = record.sample.source or ""
    chosen = "*" in settings.sources or source in settings.sources
    if not (chosen and draws[0] < settings.probability):
        return record
    out = record
    if settings.zoom_out > 0 and draws[1] < 0.5:
        out = zoom_out(out, 1.0 - settings.zoom_out * draws[2])
    if settings.hflip > 0 and draws[3] < settings.hflip and not names_a_side(out):
        out = mirror(out)
    image = out.image
    if settings.invert_grey > 0 and draws[4] < settings.invert_grey and is_greyscale(image):
        image = invert(image)
    if settings.gamma != 1.0 or settings.contrast != 0.0:
        gamma = float(np.exp((2.0 * draws[5] - 1.0) * np.log(settings.gamma)))
        contrast = 1.0 + (2.0 * draws[6] - 1.0) * settings.contrast
        image = adjust_intensity(image, gamma, contrast)
    if image is not out.image:
        out = dataclasses.replace(out, image=image)
    return out
