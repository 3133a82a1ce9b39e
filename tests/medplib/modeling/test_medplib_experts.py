from __future__ import annotations

import numpy as np
import pytest
import torch

from medplib.checkpoint import build_model, save_pretrained
from medplib.experts import GROUNDING_EXPERT, VL_EXPERT, assemble_moe
from medplib.modeling.batching import Sample, collate
from medplib.modeling.moe import MoEFeedForward


@pytest.fixture()
def experts(tiny_tokenizer):
    vl = build_model("tiny-dense", tiny_tokenizer, seed=1).eval()
    grounding = build_model("tiny-dense", tiny_tokenizer, seed=2).eval()
    return vl, grounding


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_weights_come_from_the_right_source(experts):
    vl, gr = experts
    moe = assemble_moe(vl, gr, seed=0)
    assert moe.config.moe.num_experts == 2 and moe.config.name == "tiny-dense-2e"
    for i, layer in enumerate(moe.language_model.model.layers):
        assert isinstance(layer.mlp, MoEFeedForward)
        assert _same(layer.mlp.experts[GROUNDING_EXPERT], gr.language_model.model.layers[i].mlp)
        assert _same(layer.mlp.experts[VL_EXPERT], vl.language_model.model.layers[i].mlp)
        assert _same(layer.self_attn, vl.language_model.model.layers[i].self_attn)
        assert _same(layer.input_layernorm, vl.language_model.model.layers[i].input_layernorm)
    for name in ("vision_tower", "projector", "region_encoder"):
        assert _same(getattr(moe, name), getattr(vl, name))
    assert _same(moe.language_model.lm_head, vl.language_model.lm_head)
    assert _same(moe.language_model.model.embed_tokens, vl.language_model.model.embed_tokens)
    assert _same(moe.seg_head, gr.seg_head)
    assert _same(moe.sam.mask_decoder, gr.sam.mask_decoder)
    assert _same(moe.sam.image_encoder, gr.sam.image_encoder)
    assert _same(moe.sam.prompt_encoder, gr.sam.prompt_encoder)
    again = assemble_moe(vl, gr, seed=0)
    other = assemble_moe(vl, gr, seed=1)
    r = lambda m: m.language_model.model.layers[0].mlp.router.weight  # noqa: E731
    assert torch.equal(r(moe), r(again)) and not torch.equal(r(moe), r(other))


@pytest.mark.parametrize("expert", [GROUNDING_EXPERT, VL_EXPERT])
def test_forced_expert_output_is_that_dense_ffn_times_its_probability(experts, expert):
    vl, gr = experts
    moe = assemble_moe(vl, gr)
    source = gr if expert == GROUNDING_EXPERT else vl
    logits = torch.zeros(2)
    logits[expert] = 1.5
    prob = torch.softmax(logits, 0)[expert]
    x = torch.randn(2, 7, moe.config.language.hidden_size)
    for i, layer in enumerate(moe.language_model.model.layers):
        layer.mlp.route = lambda flat, lg=logits: lg.expand(flat.shape[0], 2)
        with torch.no_grad():
            got = layer.mlp(x)
            want = source.language_model.model.layers[i].mlp(x) * prob
        torch.testing.assert_close(got, want)


def test_vl_expert_without_scaling_reproduces_the_vl_model(experts, tiny_tokenizer):
    vl, gr = experts
    moe = assemble_moe(vl, gr)
    for layer in moe.language_model.model.layers:
        layer.mlp.moe_config.scale_by_router_prob = False
        layer.mlp.route = lambda flat: torch.tensor([[-5.0, 5.0]]).expand(flat.shape[0], 2)
    img = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    batch = collate([Sample(img, [("What is this?", "A scan.")])], tiny_tokenizer, vl.config)
    with torch.no_grad():
        torch.testing.assert_close(
            moe(**batch.model_inputs()).logits, vl(**batch.model_inputs()).logits
        )


def test_assembly_from_directories_and_mismatch_errors(experts, tiny_tokenizer, tmp_path):
    vl, gr = experts
    save_pretrained(vl, tiny_tokenizer, tmp_path / "vl")
    save_pretrained(gr, tiny_tokenizer, tmp_path / "gr")
    moe = assemble_moe(tmp_path / "vl", tmp_path / "gr")
    assert _same(moe.seg_head, gr.seg_head)
    with pytest.raises(ValueError, match="already has MoE"):
        assemble_moe(moe, gr)
    different = build_model("tiny-dense", tiny_tokenizer, seed=3)
    different.config.seg_head.hidden_features = 7
    with pytest.raises(ValueError, match="seg_head"):
        assemble_moe(vl, different)
