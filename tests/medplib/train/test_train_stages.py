"""Every stage trains (its loss falls) and changes exactly the weights its recipe names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medplib.checkpoint import load_pretrained
from medplib.experts import GROUNDING_EXPERT, VL_EXPERT, assemble_moe
from medplib.train.logbook import read_metrics


def _train_losses(out: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"]


@pytest.mark.parametrize("stage", ["align", "vl", "grounding", "moe"])
def test_loss_falls_and_outputs_are_written(stages: dict[str, Path], stage: str):
    out = stages[stage]
    losses = _train_losses(out)
    assert len(losses) == 8
    assert sum(losses[-2:]) / 2 < 0.9 * sum(losses[:2]) / 2, losses
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["complete"] and state["stage"] == stage and state["step"] == 8
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    model, tokenizer, config = load_pretrained(out)
    assert config.trained and config.name == f"test-{stage}"
    assert config.moe.num_experts == (2 if stage == "moe" else 1)
    assert len(tokenizer) == model.language_model.config.vocab_size


def test_align_trains_the_tokenizer_and_the_sam_prompt_loss_falls(stages: dict[str, Path]):
    rows = [r for r in read_metrics(stages["align"] / "metrics.jsonl") if r["kind"] == "train"]
    assert rows[-1]["sam"] < rows[0]["sam"]
    tok_dir = stages["align"] / "tokenizer"
    assert (tok_dir / "tokenizer.json").is_file()
    _, tokenizer, _ = load_pretrained(stages["align"])
    assert tokenizer.convert_tokens_to_ids("<SEG>") != tokenizer.unk_token_id
    # The corpus vocabulary was learned: a frequent corpus word is far fewer tokens than bytes.
    assert len(tokenizer("segment", add_special_tokens=False)["input_ids"]) <= 2


def test_vl_trains_the_region_adapter_but_not_clip(stages: dict[str, Path]):
    before = load_file(stages["align"] / "model.safetensors")
    after = load_file(stages["vl"] / "model.safetensors")
    assert not torch.equal(
        before["region_encoder.adapter.weight"], after["region_encoder.adapter.weight"]
    )
    assert not torch.equal(before["projector.net.0.weight"], after["projector.net.0.weight"])
    clip = [k for k in before if k.startswith("vision_tower.")]
    assert clip and all(torch.equal(before[k], after[k]) for k in clip)


def test_grounding_changes_only_ffn_seg_head_and_mask_decoder(stages: dict[str, Path]):
    vl = load_file(stages["vl"] / "model.safetensors")
    gr = load_file(stages["grounding"] / "model.safetensors")
    changed = {k for k in vl if not torch.equal(vl[k], gr[k])}
    allowed = (".mlp.", "seg_head.", "sam.mask_decoder.")
    assert changed, "grounding changed nothing"
    assert all(any(a in k for a in allowed) for k in changed), sorted(changed)[:5]
    assert any(k.startswith("seg_head.") for k in changed)
    assert any(".mlp." in k for k in changed)


def test_moe_assembles_both_experts_and_trains_the_router(stages: dict[str, Path]):
    vl = load_file(stages["vl"] / "model.safetensors")
    moe = load_file(stages["moe"] / "model.safetensors")
    dense = vl["language_model.model.layers.0.mlp.up_proj.weight"]
    for e in (GROUNDING_EXPERT, VL_EXPERT):
        assert (
            moe[f"language_model.model.layers.0.mlp.experts.{e}.up_proj.weight"].shape
            == dense.shape
        )
    # Attention was not in this run's train_modules: it is still the VL expert's.
    k = "language_model.model.layers.1.self_attn.k_proj.weight"
    assert torch.equal(moe[k], vl[k])
    # The router left its initialisation (same seed → same fresh router).
    fresh = assemble_moe(stages["vl"], stages["grounding"], seed=5).state_dict()
    r = "language_model.model.layers.0.mlp.router.weight"
    assert not torch.equal(fresh[r], moe[r])
    metrics = json.loads((stages["moe"] / "trainer_state.json").read_text())["metrics"]
    for key in ("val_vqa_ce", "val_region_ce", "val_grounding_dice", "val_grounding_dice_other"):
        assert key in metrics
    assert 0.0 <= metrics["val_grounding_dice"] <= 1.0


def test_export_is_fp16_and_loads(stages: dict[str, Path]):
    weights = load_file(stages["export"] / "model.safetensors")
    floats = [t for t in weights.values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float16 for t in floats)
    model, _, config = load_pretrained(stages["export"], dtype=torch.float32)
    assert config.moe.num_experts == 2 and config.trained
    # inference settings named by the stage's config land in the exported checkpoint only
    assert config.mask_threshold == 0.5 and config.flip_tta_min_agreement == 0.7
    assert config.side_tta_max_margin == 2.0
    assert (config.presence_check_max_margin, config.presence_check_min_mask_score) == (0.5, 0.8)
    assert (config.region_check_max_margin, config.region_check_min_coverage) == (3.0, 0.6)
    _, _, grounding = load_pretrained(stages["grounding"], dtype=torch.float32)
    assert grounding.mask_threshold == 0.1 and grounding.flip_tta_min_agreement is None
    assert grounding.side_tta_max_margin is None
    assert grounding.presence_check_max_margin is None
    assert grounding.presence_check_min_mask_score == 0.85  # the default, unread while off
    assert grounding.region_check_max_margin is None
    full = load_file(stages["moe"] / "model.safetensors")
    name = "seg_head.net.0.weight"
    assert torch.allclose(weights[name].float(), full[name], atol=1e-3)
