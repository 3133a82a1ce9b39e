from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

import medplib.checkpoint as ckpt
from medplib.errors import UserInputError
from medplib.modeling.batching import Sample, collate


def _batch(model, tokenizer):
    img = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    region = np.zeros((30, 50), bool)
    region[3:9, 4:20] = True
    target = np.zeros((30, 50), np.float32)
    target[10:20, 10:30] = 1
    s = Sample(img, [("Segment near <region>", "Here: <SEG>")], [region], [target])
    return collate([s], tokenizer, model.config)


@torch.no_grad()
def _outputs(model, batch):
    out = model(**batch.model_inputs())
    return out.logits, out.pred_mask_logits[0]


@pytest.mark.parametrize("shard_bytes", [ckpt.DEFAULT_MAX_SHARD_BYTES, 3_000_000])
def test_round_trip_gives_identical_outputs(tmp_path, tiny_model, tiny_tokenizer, shard_bytes):
    ckpt.save_pretrained(tiny_model, tiny_tokenizer, tmp_path, max_shard_bytes=shard_bytes)
    files = ckpt.weight_files(tmp_path)
    if shard_bytes == ckpt.DEFAULT_MAX_SHARD_BYTES:
        assert [f.name for f in files] == ["model.safetensors"]
        assert not (tmp_path / ckpt.INDEX_NAME).exists()
    else:
        assert len(files) > 2 and files[0].name == f"model-00001-of-{len(files):05d}.safetensors"
        index = json.loads((tmp_path / ckpt.INDEX_NAME).read_text())
        assert set(index["weight_map"]) == set(tiny_model.state_dict())
    model, tokenizer, config = ckpt.load_pretrained(tmp_path)
    assert config == tiny_model.config
    assert not model.training
    text = "Segment the liver <SEG> <region></region>"
    assert tokenizer(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]
    batch = _batch(model, tokenizer)
    for a, b in zip(_outputs(model, batch), _outputs(tiny_model, batch), strict=True):
        assert torch.equal(a, b)
    stored = ckpt.read_fingerprint(tmp_path)
    assert stored == ckpt.weights_fingerprint(model.state_dict())


def test_fp16_storage_halves_size_and_keeps_router_fp32_in_memory(
    tmp_path, tiny_model, tiny_tokenizer
):
    ckpt.save_pretrained(tiny_model, tiny_tokenizer, tmp_path, dtype=torch.float16)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        key = "language_model.model.layers.0.mlp.experts.0.up_proj.weight"
        assert f.get_tensor(key).dtype == torch.float16
    model, _, _ = ckpt.load_pretrained(tmp_path, dtype=torch.float32)
    router = model.language_model.model.layers[0].mlp.router.weight
    assert router.dtype == torch.float32
    ref = tiny_model.language_model.model.layers[0].mlp.router.weight
    torch.testing.assert_close(router, ref, rtol=1e-3, atol=1e-3)


def test_saving_over_an_older_checkpoint_drops_its_tokenizer_files(
    tmp_path, tiny_model, tiny_tokenizer
):
    # An older release also wrote special_tokens_map.json; left beside the new files it would
    # be read back and override the new tokenizer's special tokens.
    stale = {"pad_token": "</s>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (tmp_path / "special_tokens_map.json").write_text(json.dumps(stale))
    (tmp_path / "added_tokens.json").write_text(json.dumps({"<stale>": 9999}))
    ckpt.save_pretrained(tiny_model, tiny_tokenizer, tmp_path)
    _, tokenizer, _ = ckpt.load_pretrained(tmp_path)
    assert tokenizer.pad_token == tiny_tokenizer.pad_token != "</s>"
    assert len(tokenizer) == len(tiny_tokenizer)
    assert not (tmp_path / "added_tokens.json").exists()


def test_load_errors_are_actionable(tmp_path):
    with pytest.raises(UserInputError, match="not a MedPLIB checkpoint"):
        ckpt.load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserInputError, match="incomplete"):
        ckpt.load_pretrained(tmp_path)


def test_default_checkpoint_is_built_once_and_labelled_untrained(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDPLIB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(ckpt, "ASSET_DEMO_DIR", tmp_path / "no-demo-here")
    first = ckpt.default_checkpoint_dir()
    assert first.parent == tmp_path
    config = json.loads((first / "config.json").read_text())
    assert config["name"] == "tiny-untrained" and config["trained"] is False
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = ckpt.default_checkpoint_dir()
    assert again == first and (again / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp dirs left behind
    # Deterministic: seed 0 and a built-in corpus give the same weights every time.
    other = ckpt.build_untrained_checkpoint(tmp_path / "other")
    assert ckpt.read_fingerprint(other) == ckpt.read_fingerprint(first)


def test_shipped_demo_checkpoint_takes_precedence(tmp_path, monkeypatch):
    demo = tmp_path / "tiny-demo"
    demo.mkdir()
    (demo / "config.json").write_text("{}")
    monkeypatch.setattr(ckpt, "ASSET_DEMO_DIR", demo)
    assert ckpt.default_checkpoint_dir() == demo
