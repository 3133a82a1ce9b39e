from __future__ import annotations

import json

import pytest
import torch

from medplib.errors import UserInputError
from medplib.modeling import MedPLIBConfig, MedPLIBForCausalLM, MoEConfig, build_config
from medplib.modeling.language_model import moe_layers
from medplib.modeling.presets import PRESETS, with_sam_patch_size
from medplib.modeling.sam_med2d import SamMed2DConfig, build_sam_med2d


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_json_round_trip(name):
    config = build_config(name)
    text = json.dumps(config.to_dict())
    again = MedPLIBConfig.from_dict(json.loads(text))
    assert again == config
    assert again.to_dict() == config.to_dict()


def test_unknown_key_and_width_mismatch_are_reported():
    data = build_config("tiny").to_dict()
    data["moe"]["n_experts"] = 3
    with pytest.raises(ValueError, match="n_experts"):
        MedPLIBConfig.from_dict(data)
    config = build_config("tiny")
    config.projector.out_features = 7
    with pytest.raises(ValueError, match="projector.out_features"):
        config.validate()


def test_ce_reduction_defaults_to_token_and_is_validated():
    data = build_config("tiny").to_dict()
    del data["losses"]["ce_reduction"]  # checkpoints saved before the option existed
    assert MedPLIBConfig.from_dict(data).losses.ce_reduction == "token"
    config = build_config("tiny")
    config.losses.ce_reduction = "sequence"
    with pytest.raises(ValueError, match="losses.ce_reduction must be one of"):
        config.validate()


def test_config_without_parity_options_keeps_todays_behaviour():
    """Checkpoints written before the parity options load as they always behaved."""
    from pathlib import Path

    path = Path(__file__).parents[1] / "fixtures" / "release-4.57" / "config.json"
    data = json.loads(path.read_text())
    assert "pooling" not in data["region"] and "pad_color" not in data["vision"]
    assert "router_dtype" not in data["moe"]
    config = MedPLIBConfig.from_dict(data)
    assert config.region.pooling == "area"
    assert config.vision.pad_color == "mean"
    assert config.moe.router_dtype == "fp32"
    assert "flip_tta_min_agreement" not in data and config.flip_tta_min_agreement is None
    assert "side_tta_max_margin" not in data and config.side_tta_max_margin is None
    assert "presence_check_max_margin" not in data and config.presence_check_max_margin is None


@pytest.mark.parametrize("gate", [-0.1, 1.5, "0.7", True])
def test_mirror_tta_gate_is_validated(gate):
    config = build_config("tiny")
    config.flip_tta_min_agreement = gate
    with pytest.raises(ValueError, match="flip_tta_min_agreement must be in"):
        config.validate()


@pytest.mark.parametrize("margin", [0.0, -1.0, float("inf"), float("nan"), "2", True])
def test_side_check_margin_is_validated(margin):
    config = build_config("tiny")
    config.side_tta_max_margin = margin
    with pytest.raises(ValueError, match="side_tta_max_margin must be a positive number"):
        config.validate()


@pytest.mark.parametrize("margin", [None, 0.5, 2])
def test_side_check_margin_round_trips(margin):
    config = build_config("tiny")
    config.side_tta_max_margin = margin
    config.validate()
    assert MedPLIBConfig.from_dict(config.to_dict()).side_tta_max_margin == margin


@pytest.mark.parametrize("margin", [0.0, -1.0, float("inf"), float("nan"), "0.5", False])
def test_presence_check_margin_is_validated(margin):
    config = build_config("tiny")
    config.presence_check_max_margin = margin
    with pytest.raises(ValueError, match="presence_check_max_margin must be a positive number"):
        config.validate()


@pytest.mark.parametrize("score", [0.0, 1.0, -0.2, None, "0.85"])
def test_presence_check_mask_score_is_validated(score):
    config = build_config("tiny")
    config.presence_check_min_mask_score = score
    with pytest.raises(ValueError, match="presence_check_min_mask_score must be a number in"):
        config.validate()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("region_check_max_margin", 0.0, "region_check_max_margin must be a positive number"),
        ("region_check_max_margin", "4", "region_check_max_margin must be a positive number"),
        ("region_check_min_coverage", 0.0, "region_check_min_coverage must be a number in"),
        ("region_check_min_coverage", 1.5, "region_check_min_coverage must be a number in"),
    ],
)
def test_region_check_settings_are_validated(field, value, message):
    config = build_config("tiny")
    setattr(config, field, value)
    with pytest.raises(ValueError, match=message):
        config.validate()


def test_region_check_settings_round_trip():
    config = build_config("tiny")
    assert config.region_check_max_margin is None  # off unless a checkpoint turns it on
    config.region_check_max_margin, config.region_check_min_coverage = 4.0, 1.0
    config.validate()
    loaded = MedPLIBConfig.from_dict(config.to_dict())
    assert (loaded.region_check_max_margin, loaded.region_check_min_coverage) == (4.0, 1.0)


@pytest.mark.parametrize(("margin", "score"), [(None, 0.85), (0.5, 0.85), (1, 0.6)])
def test_presence_check_settings_round_trip(margin, score):
    config = build_config("tiny")
    config.presence_check_max_margin = margin
    config.presence_check_min_mask_score = score
    config.validate()
    loaded = MedPLIBConfig.from_dict(config.to_dict())
    assert (loaded.presence_check_max_margin, loaded.presence_check_min_mask_score) == (
        margin,
        score,
    )


@pytest.mark.parametrize("gate", [None, 0.0, 0.7, 1])
def test_mirror_tta_gate_round_trips(gate):
    config = build_config("tiny")
    config.flip_tta_min_agreement = gate
    config.validate()
    again = MedPLIBConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.flip_tta_min_agreement == gate


@pytest.mark.parametrize(
    ("field", "value"),
    [("vision.pad_color", "white"), ("region.pooling", "max"), ("moe.router_dtype", "fp16")],
)
def test_parity_options_are_validated(field, value):
    config = build_config("tiny")
    part, name = field.split(".")
    setattr(getattr(config, part), name, value)
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        config.validate()
    data = build_config("tiny").to_dict()
    data[part][name] = value
    with pytest.raises(ValueError, match=name):
        MedPLIBConfig.from_dict(data)


def test_moe_capacity_rule():
    moe = MoEConfig()
    assert moe.capacity(10, training=True) == 8  # ceil(10 / 2 * 1.5) = ceil(7.5)
    assert moe.capacity(10, training=False) == 10  # eval factor 2 with 2 experts: no drops
    assert MoEConfig(min_capacity=4).capacity(2, training=True) == 4
    assert MoEConfig(layers=[1, -1]).layer_indices(4) == [1, 3]
    assert MoEConfig(num_experts=1).layer_indices(4) == []


def _llama_params(v: int, d: int, ffn: int, layers: int) -> int:
    attn = 4 * d * d
    mlp = 3 * d * ffn
    norms = 2 * d
    return 2 * v * d + layers * (attn + mlp + norms) + d


def test_official_7b_2e_parameter_counts_on_meta_device():
    config = build_config("medplib-7b-2e")
    with torch.device("meta"):
        model = MedPLIBForCausalLM(config)
    assert all(p.device.type == "meta" for p in model.parameters())
    total = sum(p.numel() for p in model.parameters())
    lm = model.language_model
    expected_lm = _llama_params(32267, 4096, 11008, 32)
    dense_ffn = 3 * 4096 * 11008
    router = 2 * 4096
    # Second expert + router per layer on top of the dense LLaMA-7B.
    assert sum(p.numel() for p in lm.parameters()) == expected_lm + 32 * (dense_ffn + router)
    assert len(moe_layers(lm)) == 32
    inactive = 32 * dense_ffn  # the non-chosen expert of every layer
    active = total - inactive
    assert total == 11_687_144_240
    assert active == 7_358_622_512
    assert 11.6e9 < total < 11.8e9 and 7.3e9 < active < 7.5e9
    # Component shapes from the paper / release.
    assert model.vision_tower.config.num_patches == 576
    assert model.projector.net[0].weight.shape == (4096, 1024)
    assert model.region_encoder.adapter.weight.shape == (4096, 1024)
    assert model.seg_head.net[2].weight.shape == (256, 4096)
    assert moe_layers(lm)[0][1].router.weight.shape == (2, 4096)
    assert moe_layers(lm)[0][1].router.weight.dtype == torch.float32


def test_dense_7b_has_no_moe_layers():
    with torch.device("meta"):
        model = MedPLIBForCausalLM(build_config("medplib-7b"))
    assert moe_layers(model.language_model) == []
    total = sum(p.numel() for p in model.parameters())
    assert total == 11_687_144_240 - 32 * (3 * 4096 * 11008 + 2 * 4096)


def test_finer_sam_patches_give_a_finer_grid_and_finer_masks():
    base = build_config("tiny-dense")
    fine = with_sam_patch_size(base, 8)
    assert base.sam["image_encoder"]["patch_size"] == 16  # the preset itself is untouched
    assert list(fine.sam["prompt_encoder"]["image_embedding_size"]) == [16, 16]
    restored = MedPLIBConfig.from_dict(json.loads(json.dumps(fine.to_dict())))
    sam = build_sam_med2d(SamMed2DConfig.from_dict(restored.sam)).eval()
    with torch.no_grad():
        embeddings = sam.encode_image(torch.randn(1, 3, 128, 128))  # (B, C, 16, 16)
        out = sam.decode_text_prompts(embeddings, torch.randn(2, 1, 64), torch.tensor([0, 0]))
    assert embeddings.shape == (1, 64, 16, 16)
    assert out.low_res_logits.shape == (2, 1, 64, 64)
    with pytest.raises(UserInputError, match="multiple of patch_size 5"):
        with_sam_patch_size(base, 5)
    with pytest.raises(UserInputError, match="must be even"):
        with_sam_patch_size(base, 128)  # a 1 x 1 grid cannot pass the adapter


@pytest.mark.parametrize(
    "clip",
    [
        {},  # every size from transformers' CLIPVisionConfig defaults
        {"image_size": 128, "patch_size": 8, "hidden_size": 64, "num_attention_heads": 4},
        {"image_size": [96, 96], "patch_size": [16, 16]},  # (h, w) pairs, square
    ],
)
def test_vision_sizes_read_from_the_dict_match_the_built_clip_config(clip):
    from medplib.modeling.configuration import VisionTowerConfig, _square_side

    vision = VisionTowerConfig(clip=clip)
    built = vision.clip_config()
    assert vision.image_size == _square_side(built.image_size, "image_size")
    assert vision.patch_size == _square_side(built.patch_size, "patch_size")
    assert vision.hidden_size == built.hidden_size
    assert vision.grid_size == vision.image_size // vision.patch_size


def test_non_square_clip_size_is_refused():
    from medplib.modeling.configuration import VisionTowerConfig

    with pytest.raises(ValueError, match="must be square"):
        VisionTowerConfig(clip={"image_size": [96, 64]}).image_size  # noqa: B018
