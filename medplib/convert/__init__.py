"""Checkpoint conversion from other layouts (the published MedPLIB release) to this project's."""

from __future__ import annotations

from medplib.convert.keymap import CLIP_TO_OURS, OFFICIAL_TO_OURS, SAM_TO_OURS, rename
from medplib.convert.official import ConversionReport, build_converted_config, convert_official

__all__ = [
    "CLIP_TO_OURS",
    "OFFICIAL_TO_OURS",
    "SAM_TO_OURS",
    "ConversionReport",
    "build_converted_config",
    "convert_official",
    "rename",
]
