from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP

from medplib.modeling.configuration import LanguageModelConfig, MoEConfig
from medplib.modeling.language_model import build_language_model, moe_layers
from medplib.modeling.moe import MoEFeedForward, load_balancing_loss, top1_dispatch

LLAMA = LlamaConfig(
    hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2, vocab_size=50
)


def _force_router(block: MoEFeedForward, logits_per_token: torch.Tensor):
    """Make the router return fixed logits (N, E) regardless of the input."""
    return block.router.register_forward_hook(lambda mod, inp, out: logits_per_token)


def _moe(**kw) -> MoEFeedForward:
    torch.manual_seed(0)
    return MoEFeedForward(LLAMA, MoEConfig(**kw))


def test_each_token_gets_its_experts_output_times_router_probability():
    block = _moe().eval()
    x = torch.randn(2, 5, 16)
    y = block(x)
    probs = torch.softmax(x.reshape(-1, 16) @ block.router.weight.T, dim=-1)
    rec = block.last_routing
    assert rec is not None
    assert torch.equal(rec.expert_index.reshape(-1), probs.argmax(-1))
    for n, token in enumerate(x.reshape(-1, 16)):
        e = int(probs[n].argmax())
        expected = block.experts[e](token[None])[0] * probs[n, e]
        torch.testing.assert_close(y.reshape(-1, 16)[n], expected)
    assert sum(rec.expert_share()) == pytest.approx(1.0)


def test_forced_routing_and_unscaled_option():
    block = _moe(scale_by_router_prob=False).eval()
    x = torch.randn(1, 3, 16)
    block.route = lambda flat: torch.tensor([[0.0, 3.0]]).expand(flat.shape[0], 2)  # type: ignore[method-assign]
    torch.testing.assert_close(block(x), block.experts[1](x))
    scaled = _moe().eval()
    scaled.route = lambda flat: torch.tensor([[0.0, 3.0]]).expand(flat.shape[0], 2)  # type: ignore[method-assign]
    p1 = torch.sigmoid(torch.tensor(3.0))
    torch.testing.assert_close(scaled(x), scaled.experts[1](x) * p1)


def test_straight_through_router_leaves_outputs_unscaled_but_trains_the_router():
    x = torch.randn(1, 4, 16)
    straight = _moe(straight_through_router=True).train()
    scaled = _moe().train()  # same seed: same router and experts
    y = straight(x)
    assert straight.last_routing is not None
    index = straight.last_routing.expert_index[0]
    assert index.unique().numel() == 2, "the seed must route to both experts"
    for n in range(4):
        e = int(index[n])
        torch.testing.assert_close(y[0, n], straight.experts[e](x[0, n : n + 1])[0])
    # The router's gradient is the p-scaled one divided by p: d/dp (p / sg(p)) = 1 / p.
    probe = torch.randn(1, 4, 16)
    (y * probe).sum().backward()
    (scaled(x) * probe).sum().backward()
    g_straight, g_scaled = straight.router.weight.grad, scaled.router.weight.grad
    assert g_straight is not None and g_scaled is not None
    assert float(g_straight.abs().sum()) > 0
    flat = x.reshape(-1, 16)
    probs = torch.softmax(flat @ scaled.router.weight.T, dim=-1).detach()
    top = probs.max(-1).values
    # Rebuild both gradients by hand from d loss / d p per token.
    dl_dp = torch.stack(
        [
            (straight.experts[int(index[n])](flat[n : n + 1])[0] * probe[0, n]).sum()
            for n in range(4)
        ]
    ).detach()
    for weight_grad, per_token in ((g_scaled, dl_dp), (g_straight, dl_dp / top)):
        d_logits = torch.zeros(4, 2)
        for n in range(4):
            e = int(index[n])
            d_logits[n] = per_token[n] * probs[n, e] * (torch.eye(2)[e] - probs[n])
        torch.testing.assert_close(weight_grad, d_logits.T @ flat)


def test_straight_through_router_needs_the_scaled_combine():
    with pytest.raises(ValueError, match="straight_through_router needs scale_by_router_prob"):
        MoEConfig(scale_by_router_prob=False, straight_through_router=True)


def test_capacity_drops_overflow_tokens_in_training_only():
    block = _moe()
    block.route = lambda flat: torch.tensor([[2.0, 0.0]]).expand(flat.shape[0], 2)  # type: ignore[method-assign]
    x = torch.randn(1, 8, 16)
    block.train()
    y = block(x)  # capacity ceil(8 / 2 * 1.5) = 6 → tokens 6 and 7 dropped
    assert block.last_routing is not None
    assert block.last_routing.kept[0].tolist() == [True] * 6 + [False] * 2
    assert torch.equal(y[0, 6:], torch.zeros(2, 16))
    p0 = torch.sigmoid(torch.tensor(2.0))
    torch.testing.assert_close(y[0, :6], block.experts[0](x[0, :6]) * p0)
    block.eval()
    y_eval = block(x)  # capacity 8: nothing dropped
    assert bool(block.last_routing.kept.all())
    torch.testing.assert_close(y_eval[0], block.experts[0](x[0]) * p0)


def test_top1_dispatch_keeps_first_tokens_of_each_expert():
    idx = torch.tensor([0, 1, 0, 0, 1, 0])
    assert top1_dispatch(idx, 2, capacity=2).tolist() == [True, True, True, False, True, False]


def test_load_balancing_loss_values():
    uniform = torch.full((4, 2), 0.5)
    assert load_balancing_loss(uniform, torch.tensor([0, 1, 0, 1]), 2).item() == pytest.approx(1.0)
    collapsed = torch.tensor([[1.0, 0.0]] * 4)
    assert load_balancing_loss(
        collapsed, torch.zeros(4, dtype=torch.long), 2
    ).item() == pytest.approx(2.0)
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]], requires_grad=True)
    loss = load_balancing_loss(probs, torch.tensor([0, 1, 0]), 2)
    assert loss.item() == pytest.approx(2 * (2 / 3 * (2.0 / 3) + 1 / 3 * (1.0 / 3)))
    loss.backward()
    assert probs.grad is not None


def test_router_stays_fp32_in_a_bf16_model():
    block = _moe().to(torch.bfloat16)
    assert block.router.weight.dtype == torch.float32
    assert block.experts[0].gate_proj.weight.dtype == torch.bfloat16
    y = block(torch.randn(1, 4, 16, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16
    assert block.last_routing is not None and block.last_routing.router_probs.dtype == torch.float32


def test_language_model_layer_selection():
    cfg = LanguageModelConfig(llama=LLAMA.to_diff_dict())
    dense = build_language_model(cfg, MoEConfig(num_experts=1))
    assert all(isinstance(layer.mlp, LlamaMLP) for layer in dense.model.layers)
    partial = build_language_model(cfg, MoEConfig(layers=[1]))
    assert [i for i, _ in moe_layers(partial)] == [1]
    assert isinstance(partial.model.layers[0].mlp, LlamaMLP)
    out = partial(input_ids=torch.tensor([[1, 2, 3]]))
    assert out.logits.shape == (1, 3, 50)


@pytest.mark.parametrize(
    ("router_dtype", "stored"), [("fp32", torch.float32), ("model", torch.bfloat16)]
)
def test_router_dtype_in_a_bf16_block(router_dtype, stored):
    torch.manual_seed(0)
    block = MoEFeedForward(LLAMA, MoEConfig(router_dtype=router_dtype)).eval()
    w32 = block.router.weight.detach().clone()
    block = block.to(torch.bfloat16)
    assert block.router.weight.dtype == stored
    x = torch.randn(2, 5, 16).to(torch.bfloat16)
    y = block(x)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
    # Either way the routing runs in fp32; "model" only rounds the stored weights to bf16.
    w = w32 if router_dtype == "fp32" else w32.to(torch.bfloat16).float()
    probs = torch.softmax(x.reshape(-1, 16).float() @ w.T, dim=-1)
    assert block.last_routing is not None
    torch.testing.assert_close(block.last_routing.router_probs.reshape(-1, 2), probs)


def test_unknown_router_dtype_is_refused():
    with pytest.raises(ValueError, match="router_dtype"):
        MoEConfig(router_dtype="bf16")


@pytest.mark.parametrize("router_dtype", ["fp32", "model"])
def test_bf16_model_runs_with_either_router_dtype(tmp_path, tiny_tokenizer, router_dtype):
    import numpy as np

    from medplib.checkpoint import build_model, load_pretrained, save_pretrained
    from medplib.modeling.batching import Sample, collate
    from medplib.modeling.presets import build_config

    config = build_config("tiny")
    assert config.moe.router_dtype == "fp32"  # the default keeps routing weights in fp32
    config.moe.router_dtype = router_dtype
    save_pretrained(build_model(config, tiny_tokenizer, seed=0), tiny_tokenizer, tmp_path)
    model, tokenizer, loaded = load_pretrained(tmp_path, dtype=torch.bfloat16)
    assert loaded.moe.router_dtype == router_dtype
    routers = [m.router.weight for m in model.modules() if isinstance(m, MoEFeedForward)]
    want = torch.float32 if router_dtype == "fp32" else torch.bfloat16
    assert routers and all(w.dtype == want for w in routers)
    rng = np.random.default_rng(0)
    region = np.zeros((32, 48), bool)
    region[4:20, 10:30] = True
    sample = Sample(
        rng.integers(0, 256, (32, 48, 3), dtype=np.uint8),
        [("What is at <region>?", "A lesion <SEG>")],
        [region],
        [np.zeros((32, 48), np.float32)],
    )
    with torch.no_grad():
        out = model(**collate([sample], tokenizer, loaded).model_inputs())
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits.float()).all()
