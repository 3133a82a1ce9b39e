"""Checkpoints written before transformers 5 load, and what this version writes loads back.

``fixtures/release-4.57`` holds the text files of such a checkpoint (the demo released under
transformers 4.57.6): its config.json states RoPE as ``rope_theta`` and its tokenizer files
include ``special_tokens_map.json``. The weights are drawn here from that config, so the
fixture stays small; their layout is what every release since has written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

import medplib.checkpoint as ckpt
from medplib.modeling.configuration import (
    LanguageModelConfig,
    MedPLIBConfig,
    VisionTowerConfig,
    standard_rope,
)
from medplib.modeling.medplib import MedPLIBForCausalLM
from medplib.tokenization import SpecialTokenIds

RELEASE_FILES = Path(__file__).parents[1] / "fixtures" / "release-4.57"
TEXTS = (
    "What is in region <region></region>? The liver <SEG>.",
    "USER: <im_start><gen_5> ünïcode 数字</s>",
)
# What the tokenizer said under the release that wrote it (transformers 4.57.6).
DEMO_IDS = SpecialTokenIds(
    bos=1,
    eos=2,
    pad=0,
    unk=0,
    seg=988,
    region_start=991,
    region_end=992,
    im_start=1253,
    im_end=1254,
)
DEMO_TEXT_IDS = [456, 368, 287, 506, 223, 991, 992, 33, 291, 479, 223, 988, 16]


@pytest.fixture(scope="module")
def old_dir(tmp_path_factory) -> Path:
    """A complete older-release checkpoint: the fixture's text files plus fp16 weights."""
    out = tmp_path_factory.mktemp("release-4.57")
    config = MedPLIBConfig.from_dict(json.loads((RELEASE_FILES / "config.json").read_text()))
    torch.manual_seed(0)
    model = MedPLIBForCausalLM(config)
    ckpt.save_pretrained(
        model, AutoTokenizer.from_pretrained(str(RELEASE_FILES)), out, dtype=torch.float16
    )
    for f in RELEASE_FILES.iterdir():  # the old text files replace what this version wrote
        shutil.copy2(f, out / f.name)
    return out


@pytest.fixture(scope="module")
def demo(old_dir):
    return ckpt.load_pretrained(old_dir)


def test_fixture_is_an_old_release_checkpoint(old_dir):
    # Preconditions of the tests below: the files an older release wrote are really there.
    assert (old_dir / "special_tokens_map.json").is_file()
    llama = json.loads((old_dir / "config.json").read_text())["language"]["llama"]
    assert llama["rope_theta"] == 10000.0 and "rope_parameters" not in llama


def test_old_tokenizer_files_load_with_the_same_ids(demo):
    _, tokenizer, _ = demo
    assert SpecialTokenIds.from_tokenizer(tokenizer) == DEMO_IDS
    assert tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"] == DEMO_TEXT_IDS
    assert tokenizer.pad_token == "<unk>" and tokenizer.padding_side == "right"
    ids = tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "What is in region ? The liver ."


def test_old_rope_theta_becomes_rope_parameters(demo):
    model, _, config = demo
    assert config.language.llama["rope_parameters"] == {"rope_type": "default", "rope_theta": 1e4}
    assert "rope_theta" not in config.language.llama
    head_dim = config.language.hidden_size // config.language.llama["num_attention_heads"]
    expected = 1.0 / 1e4 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    rotary = model.language_model.model.rotary_emb
    assert torch.allclose(rotary.inv_freq, expected)


def test_resaved_checkpoint_loads_back_identical(tmp_path, old_dir, demo):
    model, tokenizer, _ = demo
    ckpt.save_pretrained(model, tokenizer, tmp_path, dtype=torch.float16)
    # Same tensor names and bytes as the file read: the weights layout did not move.
    assert ckpt.read_fingerprint(tmp_path) == ckpt.read_fingerprint(old_dir)
    saved = json.loads((tmp_path / "config.json").read_text())["language"]["llama"]
    assert "rope_theta" not in saved and saved["rope_parameters"]["rope_theta"] == 1e4
    again, tokenizer2, config2 = ckpt.load_pretrained(tmp_path)
    assert SpecialTokenIds.from_tokenizer(tokenizer2) == DEMO_IDS
    for text in TEXTS:
        assert tokenizer2(text)["input_ids"] == tokenizer(text)["input_ids"]
    ids = torch.tensor([DEMO_TEXT_IDS])
    with torch.no_grad():
        a = model.language_model(input_ids=ids).logits
        b = again.language_model(input_ids=ids).logits
    assert torch.equal(a, b)


def test_checkpoint_without_special_tokens_map_loads(tmp_path, old_dir):
    # A directory written by this version has no special_tokens_map.json; the special tokens
    # must come from tokenizer_config.json / tokenizer.json alone.
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(old_dir / name, tmp_path / name)
    _, tokenizer, _ = ckpt.load_pretrained(tmp_path)
    assert SpecialTokenIds.from_tokenizer(tokenizer) == DEMO_IDS


@pytest.mark.parametrize(
    ("llama", "rope"),
    [
        ({"rope_theta": 5e5}, {"rope_type": "default", "rope_theta": 5e5}),
        (
            {"rope_theta": 1e4, "rope_scaling": {"type": "linear", "factor": 2.0}},
            {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4},
        ),
        (
            {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4}, "rope_theta": 2e4},
            {"rope_type": "default", "rope_theta": 2e4},
        ),
        ({"rope_parameters": {"rope_theta": 3e4}}, {"rope_type": "default", "rope_theta": 3e4}),
    ],
)
def test_standard_rope_folds_legacy_keys(llama, rope):
    out = standard_rope({"hidden_size": 64, **llama})
    assert out == {"hidden_size": 64, "rope_parameters": rope}
    assert standard_rope(out) == out


def test_config_without_rope_keys_keeps_the_library_default():
    assert standard_rope({"hidden_size": 64}) == {"hidden_size": 64}
    cfg = LanguageModelConfig(
        llama={"hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128}
    )
    assert cfg.llama_config().rope_parameters["rope_theta"] == 10000.0


def test_llama_dict_replaced_after_construction_is_still_read():
    # Conversion assigns `language.llama` after the config exists; RoPE must still be read.
    cfg = MedPLIBConfig.from_dict(json.loads((RELEASE_FILES / "config.json").read_text()))
    cfg.language.llama = dict(cfg.language.llama, rope_parameters=None, rope_theta=123.0)
    llama = cfg.language.llama_config()
    assert llama.rope_parameters == {"rope_type": "default", "rope_theta": 123.0}
    assert llama._attn_implementation == "sdpa"


def test_clip_sizes_given_as_pairs_read_as_one_side():
    clip = json.loads((RELEASE_FILES / "config.json").read_text())["vision"]["clip"]
    square = VisionTowerConfig(clip=dict(clip, image_size=[128, 128], patch_size=(16, 16)))
    assert (square.image_size, square.patch_size, square.num_patches) == (128, 16, 64)
    with pytest.raises(ValueError, match="square"):
        _ = VisionTowerConfig(clip=dict(clip, image_size=[128, 96])).image_size
