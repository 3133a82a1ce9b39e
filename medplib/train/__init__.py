"""MedPLIB's multi-stage training: align → vl → grounding → moe (see `medplib.train.stages`)."""

from __future__ import annotations

from medplib.train.config import STAGES, TrainConfig, config_from_dict, load_config
from medplib.train.preflight import StagePlan, plan_stage
from medplib.train.schedule import lr_factor
from medplib.train.trainer import StageResult, run_stage

__all__ = [
    "STAGES",
    "StagePlan",
    "StageResult",
    "TrainConfig",
    "config_from_dict",
    "load_config",
    "lr_factor",
    "plan_stage",
    "run_stage",
]
