"""MeCoVQA data: read and check files, merge SA-Med2D instance masks, build a demo corpus."""

from __future__ import annotations

from medplib.data.files import load_image_rgb, load_mask
from medplib.data.mecovqa import (
    LoadedSample,
    LoadedTurn,
    MeCoVQADataset,
    Problem,
    ReadCounts,
    ReadReport,
    Sample,
    Turn,
    read_mecovqa,
)
from medplib.data.merge_masks import MergeReport, merge_masks

__all__ = [
    "LoadedSample",
    "LoadedTurn",
    "MeCoVQADataset",
    "MergeReport",
    "Problem",
    "ReadCounts",
    "ReadReport",
    "Sample",
    "Turn",
    "load_image_rgb",
    "load_mask",
    "merge_masks",
    "read_mecovqa",
]
