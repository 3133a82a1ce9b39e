"""Example cases for the Ask page: a synthetic scene and a question to try on it.

A first-time visitor (a Spaces demo, a class opening the shared page) often has no medical
image at hand. The scenes are drawn on demand by the corpus's own generator, so nothing is
downloaded and no patient image ships with the code; the same seed gives the same PNG bytes,
so a scene clicked twice is stored once (uploads are content-addressed).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from medplib.data.files import png_bytes
from medplib.data.synthetic import MODALITIES, Scene, generate_scene

# Part of every example's seed, beside the modality's number and the case's own seed. The
# corpus draws its scenes from four-number seeds, so these three-number ones give fresh scenes,
# not training images.
_EXAMPLE_SEED = 2026


@dataclass(frozen=True)
class ExampleCase:
    label: str  # button text
    modality: str  # one of medplib.data.synthetic.MODALITIES
    seed: int
    question: str
    # The structure the question asks about; it must be in the scene (checked by a test).
    structure: str | None = None
    # A structure whose bounding box comes drawn as region 1, for a question about a region.
    box_around: str | None = None

    @property
    def filename(self) -> str:
        return f"example-{self.modality}-{self.seed}.png"


EXAMPLES: tuple[ExampleCase, ...] = (
    ExampleCase(
        "CT: segment the left kidney",
        "ct",
        0,
        "Please generate a mask that segments the left kidney in this image.",
        "left kidney",
    ),
    ExampleCase(
        "Chest X-ray: describe",
        "xray",
        0,
        "Please provide an interpretation from this image.",
    ),
    ExampleCase(
        "Brain MRI: segment the tumor",
        "mr",
        0,
        "Please generate a mask that segments the tumor in this image.",
        "tumor",
    ),
    ExampleCase(
        "Endoscopy: segment the polyp",
        "endoscopy",
        0,
        "Please generate a mask that segments the polyp in this image.",
        "polyp",
    ),
    ExampleCase("Fundus: which modality?", "fundus", 0, "What imaging modality is this?"),
    ExampleCase("CT: what is in region 1?", "ct", 0, "What is in region 1?", box_around="spleen"),
    ExampleCase(
        "Chest X-ray: describe region 1",
        "xray",
        0,
        "Can you describe the visual features of region 1?",
        box_around="nodule",
    ),
)


def example_case(index: int) -> ExampleCase:
    """The `index`-th example; ValueError (with the range) for any other number."""
    if not 0 <= index < len(EXAMPLES):
        raise ValueError(
            f"example {index} does not exist; there are {len(EXAMPLES)} (0–{len(EXAMPLES) - 1})."
        )
    return EXAMPLES[index]


def example_scene(index: int) -> Scene:
    """The synthetic scene of example `index`, with the exact mask of every named structure."""
    case = example_case(index)
    rng = np.random.default_rng([_EXAMPLE_SEED, MODALITIES.index(case.modality), case.seed])
    return generate_scene(case.modality, rng)


def example_box_xyxy_px(index: int) -> tuple[int, int, int, int] | None:
    """Half-open (x0, y0, x1, y1) pixel box of the structure example `index` boxes, or None."""
    case = example_case(index)
    if case.box_around is None:
        return None
    names = {o.name: o for o in example_scene(index).objects}
    if case.box_around not in names:
        raise ValueError(
            f"{case.label}: the scene has no {case.box_around}; it has {sorted(names)}."
        )
    ys, xs = np.nonzero(names[case.box_around].mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@lru_cache(maxsize=len(EXAMPLES))
def example_png(index: int) -> bytes:
    """PNG bytes of example `index`'s image (128 × 128 RGB), the same on every call."""
    return png_bytes(example_scene(index).image)
