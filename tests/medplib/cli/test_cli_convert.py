"""`medplib convert official`: a tiny model written in the released key layout converts back exactly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import medplib.checkpoint as ckpt
from medplib.cli import main
from medplib.cli.convert import parse_size
from medplib.convert.keymap import OFFICIAL_TO_OURS, rename
from medplib.errors import UserInputError
from medplib.modeling.batching import Sample, collate
from medplib.modeling.presets import build_config
from medplib.tokenization import train_tokenizer

# Our name → the released name, written independently of the converter's table.
TO_OFFICIAL = [
    (
        r"^language_model\.model\.layers\.(\d+)\.mlp\.router\.",
        r"model.layers.\1.mlp.deepspeed_moe.gate.wg.",
    ),
    (
        r"^language_model\.model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.",
        r"model.layers.\1.mlp.deepspeed_moe.experts.deepspeed_experts.\2.",
    ),
    (r"^language_model\.lm_head\.", "lm_head."),
    (r"^language_model\.model\.", "model."),
    (r"^projector\.net\.", "model.mm_projector."),
    (r"^region_encoder\.adapter\.", "model.region_fea_adapter."),
    (r"^vision_tower\.clip\.", "model.vision_tower.vision_tower."),
    (r"^sam\.", "model.visual_model."),
    (r"^seg_head\.net\.", "model.text_hidden_fcs.0."),
]


def to_official(key: str) -> str:
    for pattern, repl in TO_OFFICIAL:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    raise AssertionError(f"test table has no rule for {key}")


def released_layout(preset: str):
    """A tiny preset without the layers the released model lacks (region shape, visual norms),
    with the released preprocessing (region sampler, integer padding colour)."""
    config = build_config(preset)
    config.region.shape_features = False
    config.projector.output_rms = config.region.output_rms = None
    config.region.pooling = config.vision.pad_color = "official"
    return config


@pytest.fixture(scope="module")
def original():
    tokenizer = train_tokenizer(
        ["USER: ASSISTANT: segment the liver please. The lesion is here."] * 8, vocab_size=300
    )
    model = ckpt.build_model(released_layout("tiny"), tokenizer, seed=3).eval()
    return model, tokenizer


def _write_official(root: Path, model, tokenizer) -> dict[str, Path]:
    """Released layout: 2 safetensors shards + index, one .bin shard, config, tokenizer;
    CLIP as a separate HF dir and SAM-Med2D as a separate sam-med2d_b.pth-style file."""
    src, clip_dir = root / "MedPLIB-tiny", root / "clip"
    src.mkdir()
    clip_dir.mkdir()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    official = {to_official(k): v for k, v in state.items()}
    clip = {k: v for k, v in official.items() if k.startswith("model.vision_tower.")}
    sam_enc = {
        k: v
        for k, v in official.items()
        if k.startswith(("model.visual_model.image_encoder.", "model.visual_model.prompt_encoder."))
    }
    in_bin = {
        k: v
        for k, v in official.items()
        if k.startswith(("lm_head.", "model.text_hidden_fcs.", "model.visual_model.mask_decoder."))
    }
    rest = sorted(set(official) - set(clip) - set(sam_enc) - set(in_bin))
    half = len(rest) // 2
    shards = {
        "model-00001-of-00002.safetensors": rest[:half],
        "model-00002-of-00002.safetensors": rest[half:],
    }
    weight_map = {}
    for fname, keys in shards.items():
        save_file({k: official[k].contiguous() for k in keys}, str(src / fname))
        weight_map.update(dict.fromkeys(keys, fname))
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    # Older transformers saved RoPE frequencies; the converter must drop them.
    in_bin["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    torch.save(in_bin, src / "pytorch_model-00001-of-00001.bin")
    torch.save({"not": "weights"}, src / "training_args.bin")  # must be left alone
    cfg = model.config
    official_config = dict(cfg.language.llama)
    official_config.update(
        architectures=["MedPLIBForCausalLM"],
        mm_vision_select_layer=cfg.vision.select_layer,
        mm_projector_type="mlp2x_gelu",
        mm_use_im_start_end=True,
        max_sample_point=cfg.region.max_sample_points,
        out_dim=cfg.seg_head.out_features,
        moe={
            "moe_enable": True,
            "num_experts": [2] * cfg.language.num_layers,
            "top_k_experts": 1,
            "capacity_factor": cfg.moe.capacity_factor,
            "eval_capacity_factor": cfg.moe.eval_capacity_factor,
            "min_capacity": cfg.moe.min_capacity,
            "router_aux_loss_coef": cfg.moe.router_aux_loss_coef,
        },
    )
    (src / "config.json").write_text(json.dumps(official_config))
    tokenizer.save_pretrained(str(src))

    clip_state = {k.replace("model.vision_tower.vision_tower.", ""): v for k, v in clip.items()}
    n_pos = clip_state["vision_model.embeddings.position_embedding.weight"].shape[0]
    clip_state["vision_model.embeddings.position_ids"] = torch.arange(n_pos)[None]
    # A full CLIPModel file also holds the text tower and contrastive heads, which are unused.
    clip_state["text_model.embeddings.token_embedding.weight"] = torch.zeros(10, 4)
    clip_state["logit_scale"] = torch.tensor(2.0)
    save_file(
        {k: v.contiguous() for k, v in clip_state.items()}, str(clip_dir / "model.safetensors")
    )
    (clip_dir / "config.json").write_text(
        json.dumps(dict(cfg.vision.clip, model_type="clip_vision_model"))
    )

    sam = {
        k.replace("model.visual_model.", ""): v
        for k, v in official.items()
        if k.startswith("model.visual_model.")
    }
    # The generic SAM-Med2D decoder differs from MedPLIB's trained one, which the checkpoint holds.
    sam = {k: (v + 1.0 if k.startswith("mask_decoder.") else v) for k, v in sam.items()}
    sam_path = root / "sam-med2d_b.pth"
    torch.save({"model": sam, "epoch": 12}, sam_path)
    return {"src": src, "clip": clip_dir, "sam": sam_path}


@torch.no_grad()
def _outputs(model, tokenizer):
    img = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    region = np.zeros((40, 56), bool)
    region[5:15, 8:30] = True
    target = np.zeros((40, 56), np.float32)
    sample = Sample(img, [("Where is <region>?", "There: <SEG>")], [region], [target])
    batch = collate([sample], tokenizer, model.config)
    out = model(**batch.model_inputs())
    assert len(out.pred_mask_logits) == 1
    return out.logits, out.pred_mask_logits[0]


def test_table_maps_released_names():
    assert (
        rename(
            "model.layers.31.mlp.deepspeed_moe.experts.deepspeed_experts.1.down_proj.weight",
            OFFICIAL_TO_OURS,
        )
        == "language_model.model.layers.31.mlp.experts.1.down_proj.weight"
    )
    assert (
        rename("model.layers.7.mlp.deepspeed_moe.gate.wg.weight", OFFICIAL_TO_OURS)
        == "language_model.model.layers.7.mlp.router.weight"
    )
    assert rename("model.text_hidden_fcs.0.2.bias", OFFICIAL_TO_OURS) == "seg_head.net.2.bias"
    assert rename("model.visual_model.mask_decoder.iou_token.weight", OFFICIAL_TO_OURS) == (
        "sam.mask_decoder.iou_token.weight"
    )
    assert rename("model.some_new_module.weight", OFFICIAL_TO_OURS) is None


def test_convert_official_round_trip(tmp_path, original, capsys):
    model, tokenizer = original
    paths = _write_official(tmp_path, model, tokenizer)
    dst = tmp_path / "converted"
    code = main(
        [
            "convert",
            "official",
            str(paths["src"]),
            str(dst),
            "--clip",
            str(paths["clip"]),
            "--sam",
            str(paths["sam"]),
            "--preset",
            "tiny",
            "--name",
            "tiny",
            "--max-shard-size",
            "2MB",
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    state = model.state_dict()
    n_clip = sum(k.startswith("vision_tower.") for k in state)
    n_sam_enc = sum(k.startswith(("sam.image_encoder.", "sam.prompt_encoder.")) for k in state)
    n_dec = sum(k.startswith("sam.mask_decoder.") for k in state)
    assert report["num_tensors"] == len(state)
    assert report["from_clip"] == n_clip
    assert report["from_sam"] == n_sam_enc
    assert report["overridden_by_checkpoint"] == n_dec
    assert report["from_checkpoint"] == len(state) - n_clip - n_sam_enc
    assert report["num_shards"] > 1 and report["num_shards"] == len(ckpt.weight_files(dst))
    assert any(i.endswith("rotary_emb.inv_freq") for i in report["ignored"])
    assert any(i.endswith("position_ids") for i in report["ignored"])
    assert any(i.endswith(":logit_scale") for i in report["ignored"])
    assert any(":text_model." in i for i in report["ignored"])

    # load_pretrained raises on any missing or unexpected key.
    loaded, loaded_tok, config = ckpt.load_pretrained(dst, dtype=torch.float32)
    expected = model.config.to_dict()
    expected["trained"] = True
    assert config.to_dict() == expected
    loaded_state = loaded.state_dict()
    assert set(loaded_state) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded_state[key], value), key
    for a, b in zip(_outputs(loaded, loaded_tok), _outputs(model, tokenizer), strict=True):
        assert torch.equal(a, b)
    assert ckpt.read_fingerprint(dst) == ckpt.weights_fingerprint(loaded_state)
    assert report["checkpoint_id"] == ckpt.checkpoint_id(config, ckpt.read_fingerprint(dst))
    assert json.loads((dst / "conversion.json").read_text()) == report


def test_bf16_output_keeps_router_fp32(tmp_path, original, capsys):
    model, tokenizer = original
    paths = _write_official(tmp_path, model, tokenizer)
    dst = tmp_path / "bf16"
    argv = ["convert", "official", str(paths["src"]), str(dst), "--clip", str(paths["clip"])]
    argv += ["--sam", str(paths["sam"]), "--preset", "tiny", "--dtype", "bfloat16"]
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    from safetensors import safe_open

    with safe_open(str(dst / "model.safetensors"), framework="pt") as f:
        router = f.get_tensor("language_model.model.layers.1.mlp.router.weight")
        up = f.get_tensor("language_model.model.layers.1.mlp.experts.0.up_proj.weight")
    assert router.dtype == torch.float32 and up.dtype == torch.bfloat16
    assert torch.equal(
        router, model.state_dict()["language_model.model.layers.1.mlp.router.weight"]
    )


def test_unknown_keys_fail_with_their_names(tmp_path, original, capsys):
    model, tokenizer = original
    paths = _write_official(tmp_path, model, tokenizer)
    save_file(
        {"model.region_geo_sampler.proj.weight": torch.zeros(2, 2)},
        str(paths["src"] / "extra.safetensors"),
    )
    (paths["src"] / "model.safetensors.index.json").unlink()  # so the extra file is globbed in
    dst = tmp_path / "out"
    argv = ["convert", "official", str(paths["src"]), str(dst), "--sam", str(paths["sam"])]
    assert main([*argv, "--clip", str(paths["clip"]), "--preset", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "model.region_geo_sampler.proj.weight" in err and "does not know" in err
    assert not dst.exists()


def test_missing_components_are_reported_with_a_hint(tmp_path, original, capsys):
    model, tokenizer = original
    paths = _write_official(tmp_path, model, tokenizer)
    dst = tmp_path / "out"
    argv = ["convert", "official", str(paths["src"]), str(dst), "--clip", str(paths["clip"])]
    assert main([*argv, "--preset", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "SAM-Med2D" in err and "--sam" in err and "sam.image_encoder." in err
    assert not dst.exists()
    assert not list(tmp_path.glob(".out.partial-*"))


def test_wrong_preset_is_a_shape_error(tmp_path, original, capsys):
    model, tokenizer = original
    paths = _write_official(tmp_path, model, tokenizer)
    argv = [
        "convert",
        "official",
        str(paths["src"]),
        str(tmp_path / "o"),
        "--clip",
        str(paths["clip"]),
    ]
    # The default preset's SAM-Med2D is ViT-B at 256 px; the tiny SAM weights cannot fit it.
    assert main([*argv, "--sam", str(paths["sam"])]) == 2
    assert "--preset" in capsys.readouterr().err


def test_refuses_non_empty_destination(tmp_path, original):
    model, tokenizer = original
    paths = _write_official(tmp_path, model, tokenizer)
    dst = tmp_path / "taken"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    from medplib.convert import convert_official

    with pytest.raises(UserInputError, match="--overwrite"):
        convert_official(paths["src"], dst, clip=paths["clip"], sam=paths["sam"], preset="tiny")
    assert (dst / "keep.txt").read_text() == "mine"


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("2GiB") == 2 * 1024**3
    assert parse_size("1234") == 1234
    with pytest.raises(UserInputError, match="not a size"):
        parse_size("lots")


def test_every_released_7b_name_maps_one_to_one():
    from medplib.convert.keymap import SAM_TO_OURS
    from medplib.modeling.medplib import MedPLIBForCausalLM
    from medplib.modeling.presets import build_config

    with torch.device("meta"):
        ours = set(MedPLIBForCausalLM(build_config("medplib-7b-2e")).state_dict())
    released = {to_official(k) for k in ours}
    assert len(released) == len(ours)
    assert {rename(k, OFFICIAL_TO_OURS) for k in released} == ours
    # Independent fact file: the key list of the released sam-med2d_b.pth.
    facts = Path(__file__).parents[1] / "modeling" / "sam_med2d_b_keys.json"
    sam_keys = json.loads(facts.read_text())["state_dict"]
    assert {rename(k, SAM_TO_OURS) for k in sam_keys} == {k for k in ours if k.startswith("sam.")}


def test_dense_checkpoint_with_everything_inside(tmp_path, original, capsys):
    _, tokenizer = original
    dense = ckpt.build_model(released_layout("tiny-dense"), tokenizer, seed=5).eval()
    src = tmp_path / "stage2"
    src.mkdir()
    official = {to_official(k): v.contiguous() for k, v in dense.state_dict().items()}
    assert "model.layers.0.mlp.gate_proj.weight" in official  # plain LLaMA FFN, no MoE
    save_file(official, str(src / "model.safetensors"))
    llama = dict(dense.config.language.llama)
    (src / "config.json").write_text(json.dumps(llama))
    tokenizer.save_pretrained(str(src))
    dst = tmp_path / "out"
    assert main(["convert", "official", str(src), str(dst), "--preset", "tiny-dense"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["from_checkpoint"] == len(official) and report["from_sam"] == 0
    loaded, _, config = ckpt.load_pretrained(dst, dtype=torch.float32)
    assert config.moe.num_experts == 1 and config.name == "stage2"
    state = dense.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())


def test_unknown_submodule_under_a_known_prefix_names_the_source_key(tmp_path, original, capsys):
    model, tokenizer = original
    paths = _write_official(tmp_path, model, tokenizer)
    extra = {"model.layers.1.mlp.deepspeed_moe.coefficient.weight": torch.zeros(2, 4)}
    torch.save(extra, paths["src"] / "pytorch_model-extra.bin")
    argv = ["convert", "official", str(paths["src"]), str(tmp_path / "o"), "--preset", "tiny"]
    assert main([*argv, "--clip", str(paths["clip"]), "--sam", str(paths["sam"])]) == 2
    err = capsys.readouterr().err
    assert "pytorch_model-extra.bin:model.layers.1.mlp.deepspeed_moe.coefficient.weight" in err


def test_linear_projector_checkpoint_converts(tmp_path, original, capsys):
    """LLaVA's `mm_projector_type: linear` stores a bare Linear as model.mm_projector.weight."""
    _, tokenizer = original
    config = build_config("tiny")  # this project's defaults: area pooling, exact-mean padding
    config.region.shape_features = False
    config.projector.output_rms = config.region.output_rms = None
    config.projector.type = "linear"
    model = ckpt.build_model(config, tokenizer, seed=7).eval()
    state = model.state_dict()
    assert "projector.net.0.weight" in state and "projector.net.2.weight" not in state
    official = {to_official(k): v.contiguous() for k, v in state.items()}
    for part in ("weight", "bias"):  # the released layout has no Sequential index
        official[f"model.mm_projector.{part}"] = official.pop(f"model.mm_projector.0.{part}")
    src = tmp_path / "linear"
    src.mkdir()
    save_file(official, str(src / "model.safetensors"))
    llama = dict(model.config.language.llama, mm_projector_type="linear")
    (src / "config.json").write_text(json.dumps(llama))
    tokenizer.save_pretrained(str(src))
    dst = tmp_path / "out"
    assert main(["convert", "official", str(src), str(dst), "--preset", "tiny"]) == 0, (
        capsys.readouterr().err
    )
    report = json.loads(capsys.readouterr().out)
    assert report["from_checkpoint"] == len(state) and report["notes"] == []

    written = json.loads((dst / "config.json").read_text())
    assert written["projector"]["type"] == "linear"
    # The released weights come with the released preprocessing.
    assert written["region"]["pooling"] == "official"
    assert written["vision"]["pad_color"] == "official"
    assert written["moe"]["router_dtype"] == "fp32"

    loaded, loaded_tok, _ = ckpt.load_pretrained(dst, dtype=torch.float32)
    loaded_state = loaded.state_dict()
    assert set(loaded_state) == set(state)
    assert all(torch.equal(loaded_state[k], v) for k, v in state.items())
    patches = torch.randn(1, 4, config.projector.in_features)
    expected = patches @ state["projector.net.0.weight"].T + state["projector.net.0.bias"]
    torch.testing.assert_close(loaded.projector(patches), expected)
    logits, masks = _outputs(loaded, loaded_tok)
    assert torch.isfinite(logits).all() and masks.shape == (40, 56)


def test_linear_projector_rules_match_whole_names_only():
    assert rename("model.mm_projector.weight", OFFICIAL_TO_OURS) == "projector.net.0.weight"
    assert rename("model.mm_projector.bias", OFFICIAL_TO_OURS) == "projector.net.0.bias"
    assert rename("model.mm_projector.2.weight", OFFICIAL_TO_OURS) == "projector.net.2.weight"
    assert rename("model.mm_projector.weight_scale", OFFICIAL_TO_OURS) == (
        "projector.net.weight_scale"  # falls through to the prefix rule, then fails shape checks
    )
