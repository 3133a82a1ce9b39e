"""`--stage moe --init MOE_DIR`: continue a mixture-of-experts checkpoint instead of assembling one.

The fine-tuning run itself is in tests/serving/test_dataset_finetune.py (reviewed answers
exported from the platform, then trained on); these check what is refused and what is kept.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from train_helpers import stage_dict

from medplib.checkpoint import ASSET_DEMO_DIR
from medplib.cli import main
from medplib.errors import UserInputError
from medplib.train import config_from_dict, plan_stage
from medplib.train.stages import build_stage_model


def _dense_copy(tmp_path: Path) -> Path:
    """The demo checkpoint's files with a dense config: what preflight reads of a vl output."""
    dense = tmp_path / "dense"
    dense.mkdir()
    config = json.loads((ASSET_DEMO_DIR / "config.json").read_text())
    config["moe"]["num_experts"] = 1
    (dense / "config.json").write_text(json.dumps(config))
    (dense / "model.safetensors").write_bytes(b"")
    return dense


def test_moe_needs_exactly_one_starting_point_and_a_mixture_to_continue(tmp_path: Path):
    config = config_from_dict(stage_dict("moe"))
    data, out = tmp_path / "data", tmp_path / "out"
    experts = (ASSET_DEMO_DIR, ASSET_DEMO_DIR)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(ASSET_DEMO_DIR, unfinished)
    (unfinished / "trainer_state.json").write_text(json.dumps({"stage": "moe", "complete": False}))
    cases = {
        "neither": ({}, "exactly one of --experts VL_DIR GROUNDING_DIR"),
        "both": ({"init_dir": ASSET_DEMO_DIR, "experts": experts}, "exactly one"),
        "dense --init": ({"init_dir": _dense_copy(tmp_path)}, "is a dense model"),
        "missing --init": ({"init_dir": tmp_path / "nope"}, "does not exist"),
        "unfinished --init": ({"init_dir": unfinished}, "unfinished moe run"),
    }
    for name, (kwargs, message) in cases.items():
        with pytest.raises(UserInputError, match=message):
            plan_stage(config, data, out, **kwargs)
        assert not out.exists(), name
    reshaped = config_from_dict(stage_dict("moe", model={"moe": {"num_experts": 3}}))
    with pytest.raises(UserInputError, match="model.moe.num_experts is 3 but the --init"):
        plan_stage(reshaped, data, out, init_dir=ASSET_DEMO_DIR)


def test_the_cli_refuses_both_starting_points_in_one_line(tmp_path: Path, capsys):
    cfg = tmp_path / "moe.yaml"
    cfg.write_text(yaml.safe_dump(stage_dict("moe")))
    argv = ["train", "--stage", "moe", "--config", str(cfg), "--data", str(tmp_path)]
    argv += ["--out", str(tmp_path / "out"), "--init", str(ASSET_DEMO_DIR)]
    assert main([*argv, "--experts", str(ASSET_DEMO_DIR), str(ASSET_DEMO_DIR)]) == 2
    err = capsys.readouterr().err
    assert "exactly one of --experts" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_init_keeps_the_mixture_and_applies_the_configs_run_settings():
    config = config_from_dict(stage_dict("moe", model={"moe": {"capacity_factor": 2.5}}))
    model, tokenizer = build_stage_model(config, init_dir=ASSET_DEMO_DIR)
    shipped = json.loads((ASSET_DEMO_DIR / "config.json").read_text())["moe"]
    assert model.training and model.config.moe.num_experts == shipped["num_experts"] == 2
    assert model.config.moe.capacity_factor == 2.5 != shipped["capacity_factor"]
    # Every MoE layer reads the same settings object, so the run's capacity reaches them.
    layer = model.language_model.model.layers[0].mlp
    assert layer.moe_config is model.config.moe
    assert model.config.name == "test-moe" and len(tokenizer) == shipped_vocab()


def shipped_vocab() -> int:
    config = json.loads((ASSET_DEMO_DIR / "config.json").read_text())
    return int(config["language"]["llama"]["vocab_size"])
