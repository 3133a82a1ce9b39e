"""Helpers for the training tests: quick stage configs."""

from __future__ import annotations

from typing import Any

ALIGN_MODULES = [
    "vision_tower.*",
    "projector.*",
    "region_encoder.*",
    "language_model.*",
    "seg_head.*",
    "sam.*",
]
VL_MODULES = ["language_model.*", "projector.*", "region_encoder.*"]
GROUNDING_MODULES = ["language_model.model.layers.*.mlp.*", "seg_head.*", "sam.mask_decoder.*"]
MOE_MODULES = [
    "language_model.model.layers.*.mlp.*",
    "language_model.lm_head.*",
    "seg_head.*",
    "sam.mask_decoder.*",
    "region_encoder.*",
]


def stage_dict(stage: str, steps: int = 8, **changes: Any) -> dict[str, Any]:
    """A quick config: a handful of records seen again and again, so the loss must fall."""
    tasks = {
        "align": {"vqa": 1.0, "region": 1.0, "grounding": 1.0},
        "vl": {"vqa": 1.0, "region": 1.0},
        "grounding": {"grounding": 1.0},
        "moe": {"vqa": 1.0, "region": 1.0, "grounding": 1.0},
    }[stage]
    modules = {
        "align": ALIGN_MODULES,
        "vl": VL_MODULES,
        "grounding": GROUNDING_MODULES,
        "moe": MOE_MODULES,
    }[stage]
    config: dict[str, Any] = {
        "stage": stage,
        "seed": 5,
        "model": {"vocab_size": 400, "name": f"test-{stage}"},
        "data": {"tasks": tasks, "max_records": 4, "val_records": 4},
        "optim": {"lr": 2e-3, "warmup_fraction": 0.0, "decay_fraction": 0.25},
        "loop": {"steps": steps, "batch_size": 4, "log_every": 1, "checkpoint_every": 0},
        "train_modules": modules,
        "align": {"sam_batch_size": 4},
    }
    if stage in ("align", "grounding"):
        config["losses"] = {
            "ce_weight": 1.0,
            "bce_weight": 1.0,
            "dice_weight": 5.0,
            "focal_weight": 1.0,
        }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config
