"""Synthetic scenes for the eight MeCoVQA modalities, with exact masks for every named structure.

`generate_scene(modality, rng)` paints one image through `medplib.data.painters`, folds
structures too small to ask about into their surroundings, and renders it. Every scene names at
least two structures, so a grounding question must be read to be answered.
"""

from __future__ import annotations

import numpy as np

from medplib.data.canvas import FINDINGS, Canvas, Scene, SceneObject
from medplib.data.painters import CLASS_NAMES, LOOKS, SITE_NAMES, VOCABULARY

__all__ = [
    "CLASS_NAMES",
    "FINDINGS",
    "MODALITIES",
    "VOCABULARY",
    "Scene",
    "SceneObject",
    "generate_scene",
]

MODALITIES = ("ct", "mr", "pet", "xray", "ultrasound", "endoscopy", "fundus", "dermoscopy")


def generate_scene(
    modality: str, rng: np.random.Generator, size: int = 128, min_area_frac: float = 0.004
) -> Scene:
    """One synthetic `modality` image whose named structures each cover ≥ `min_area_frac` of it.

    At least two structures are named, so grounding questions have more than one candidate.
    """
    if modality not in LOOKS:
        raise ValueError(f"unknown modality {modality!r}; choose from {', '.join(MODALITIES)}")
    paint, render = LOOKS[modality]
    min_area = max(1, round(min_area_frac * size * size))
    for _ in range(20):
        canvas = Canvas(size, rng)
        site = paint(canvas)
        canvas.fold_small(min_area)
        objects = canvas.objects()
        if len(objects) >= 2:
            break
    image = np.round(np.clip(render(canvas), 0, 1) * 255).astype(np.uint8)  # (H, W, 3)
    present = {o.name for o in objects}
    absent = tuple(n for n in VOCABULARY[site] if n not in present)
    return Scene(image, modality, SITE_NAMES.get(site, site), objects, absent)
