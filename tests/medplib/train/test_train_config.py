"""Stage configs: shipped files parse, unknown keys and bad values are refused, schedule shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from medplib.errors import UserInputError
from medplib.train import config_from_dict, load_config, lr_factor
from medplib.train.config import dump_config

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


@pytest.mark.parametrize(
    "path", sorted(CONFIGS.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_shipped_configs_parse_and_round_trip(path: Path):
    config = load_config(path)
    # vl-readout.yaml, vl-mix.yaml, moe-continue.yaml: further runs of a stage, named after it.
    assert config.stage == path.stem.split("-")[0]
    again = config_from_dict(config.to_dict())
    assert again == config and again.fingerprint() == config.fingerprint()
    import yaml

    assert config_from_dict(yaml.safe_load(dump_config(config))) == config


def test_every_stage_has_a_tiny_and_a_7b_config():
    for scale, extra in (("tiny", {"vl-readout", "vl-mix", "moe-continue"}), ("7b", set())):
        assert {p.stem for p in (CONFIGS / scale).glob("*.yaml")} == {
            "align",
            "vl",
            "grounding",
            "moe",
            *extra,
        }


def test_7b_configs_carry_the_official_recipe():
    vl, gr, moe = (load_config(CONFIGS / "7b" / f"{s}.yaml") for s in ("vl", "grounding", "moe"))
    # Global batch 128 on 4 GPUs in every stage.
    for c in (vl, gr, moe):
        assert c.loop.batch_size * c.loop.grad_accum * 4 == 128
        assert (
            c.optim.betas == (0.9, 0.95)
            and c.optim.weight_decay == 0.0
            and c.optim.grad_clip == 1.0
        )
        assert c.loop.mixed_precision == "bf16" and c.seed == 42
    assert (vl.loop.epochs, vl.optim.lr, vl.lora.r) == (3, 1e-4, 16)
    assert set(vl.lora.target_modules) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert "region_encoder.*" in vl.train_modules  # the region adapter trains in stage II
    assert (gr.loop.epochs, gr.optim.lr, gr.lora.r, gr.lora.alpha) == (10, 3e-4, 8, 16)
    assert set(gr.lora.target_modules) == {"gate_proj", "up_proj", "down_proj"}
    w = gr.losses
    assert (w.ce_weight, w.bce_weight, w.dice_weight, w.focal_weight) == (1, 1, 5, 1)
    w = moe.losses
    assert (w.ce_weight, w.bce_weight, w.dice_weight, w.focal_weight) == (1, 2, 0.5, 0)
    assert (moe.loop.epochs, moe.optim.lr, moe.data.max_length) == (3, 3e-4, 1024)
    assert moe.moe_config().router_aux_loss_coef == 0.0 and moe.moe_config().capacity_factor == 1.5
    # The released recipe averages CE over tokens.
    assert {c.losses.ce_reduction for c in (vl, gr, moe)} == {"token"}


def test_ce_reduction_is_read_from_yaml():
    config = config_from_dict(_base(losses={"ce_weight": 1, "ce_reduction": "sample"}))
    assert config.losses.ce_reduction == "sample" and config.losses.ce_weight == 1.0


def _base(**changes):
    data = {"stage": "vl", "loop": {"steps": 3}, "train_modules": ["projector.*"]}
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optim": {"lrr": 1.0}}, "unknown key optim.lrr"),
        ({"colour": "red"}, "unknown key colour"),
        ({"losses": {"dice": 1.0}}, "unknown key losses.dice"),
        ({"losses": {"ce_reduction": "batch"}}, "losses.ce_reduction must be one of"),
        ({"losses": {"ce_reduction": 1.0}}, "losses.ce_reduction has the wrong type"),
        ({"optim": {"lr": "fast"}}, "optim.lr has the wrong type"),
        ({"stage": "pretrain"}, "stage must be one of"),
        ({"data": {"tasks": {"captions": 1.0}}}, "data.tasks"),
        ({"data": {"split": "holdout"}}, "only the train split"),
        ({"data": {"question_kinds": {"side": -1.0}}}, "data.question_kinds must be 0 or more"),
        ({"data": {"question_kinds": {"side": "many"}}}, "data.question_kinds has the wrong type"),
        ({"loop": {"steps": 3, "epochs": 1.0}}, "exactly one of loop.steps and loop.epochs"),
        ({"train_modules": []}, "nothing would train"),
        ({"model": {"preset": "huge"}}, "model.preset 'huge' is unknown"),
        ({"model": {"sam_patch_size": 0}}, "model.sam_patch_size must be a positive"),
        ({"model": {"flip_tta_min_agreement": 1.2}}, "model.flip_tta_min_agreement must be"),
        ({"model": {"side_tta_max_margin": 0.0}}, "model.side_tta_max_margin must be a positive"),
        (
            {"model": {"presence_check_max_margin": -1}},
            "model.presence_check_max_margin must be a positive",
        ),
        (
            {"model": {"region_check_max_margin": 0}},
            "model.region_check_max_margin must be a positive",
        ),
        (
            {"model": {"region_check_min_coverage": -0.5}},
            "model.region_check_min_coverage must be a number in",
        ),
        (
            {"model": {"presence_check_min_mask_score": 1.5}},
            "model.presence_check_min_mask_score must be a number in",
        ),
        ({"model": {"mask_threshold": 1.0}}, "model.mask_threshold must be a number in"),
        (
            {"model": {"flip_tta_min_agreement": "high"}},
            "model.flip_tta_min_agreement has the wrong",
        ),
    ],
)
def test_bad_configs_are_refused_with_the_reason(changes, message):
    with pytest.raises(UserInputError, match=message):
        config_from_dict(_base(**changes))


def test_yaml_errors_name_the_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: vl\nloop: {steps: 3\n")
    with pytest.raises(UserInputError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(UserInputError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_schedule_warms_up_stays_flat_then_decays():
    f = [lr_factor(s, 100, warmup_fraction=0.1, decay_fraction=0.2) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0
    assert all(v == 1.0 for v in f[10:81])
    assert all(a > b for a, b in zip(f[80:], f[81:], strict=False))
    assert f[99] == pytest.approx(0.05)
    # decay_fraction 1: the official warm-up then linear decay.
    g = [lr_factor(s, 10, warmup_fraction=0.1, decay_fraction=1.0) for s in range(10)]
    assert g[:3] == [1.0, 1.0, pytest.approx(8 / 9)]
