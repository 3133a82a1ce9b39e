"""MedPLIB model components (segment-anything-style split) and their configs."""

from __future__ import annotations

from medplib.modeling.configuration import (
    LanguageModelConfig,
    LossConfig,
    MedPLIBConfig,
    MoEConfig,
    ProjectorConfig,
    RegionEncoderConfig,
    SegHeadConfig,
    VisionTowerConfig,
)
from medplib.modeling.medplib import MedPLIBForCausalLM
from medplib.modeling.moe import MoEFeedForward, load_balancing_loss
from medplib.modeling.outputs import LayerRouting, MedPLIBOutput
from medplib.modeling.presets import PRESETS, build_config

__all__ = [
    "PRESETS",
    "LanguageModelConfig",
    "LayerRouting",
    "LossConfig",
    "MedPLIBConfig",
    "MedPLIBForCausalLM",
    "MedPLIBOutput",
    "MoEConfig",
    "MoEFeedForward",
    "ProjectorConfig",
    "RegionEncoderConfig",
    "SegHeadConfig",
    "VisionTowerConfig",
    "build_config",
    "load_balancing_loss",
]
