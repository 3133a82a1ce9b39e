"""Dense vs 2-expert top-1 MoE: forward FLOPs and CPU wall time on identical inputs.

Both models share every weight except the FFNs (the dense FFN is MoE expert 0), so the prompt
embeddings are identical and any difference comes from routing. Wall times use the project's
decoding loop (`medplib.generation.generate`, KV cache on) and are the median of several
runs after a warm-up, alternating the two models so drift in machine load hits both alike.
With top-1 routing each token runs one expert, so the targets are FLOPs ratio ≤ 1.01 and
wall-time ratio ≤ 1.10 (MoE / dense).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch

from medplib.bench.measure import (
    QUICK_SIZE,
    LLMSize,
    attention_scores_counted,
    count_flops,
    load_average,
    machine,
    median,
    moe_and_dense,
    prompt_embeddings,
    timed,
    timed_generate,
)
from medplib.modeling.language_model import moe_layers
from medplib.modeling.medplib import MedPLIBForCausalLM

FLOPS_RATIO_TARGET = 1.01
WALL_RATIO_TARGET = 1.10


@dataclass(frozen=True)
class MoEBenchSettings:
    size: LLMSize = LLMSize()
    text_tokens: int = 32  # question tokens after the 256 visual tokens
    new_tokens: int = 32  # decoded tokens per run (per-token time = decode / (n - 1))
    repeats: int = 5  # timed runs per model; the median is reported
    warmup: int = 1  # untimed runs per model first (allocator, caches)
    layer_loops: int = 20  # calls per FFN-layer timing sample
    threads: int = 2
    seed: int = 0


QUICK = MoEBenchSettings(
    size=QUICK_SIZE,
    text_tokens=8,
    new_tokens=3,
    repeats=1,
    warmup=0,
    layer_loops=2,
)


@torch.no_grad()
def _flops(model: MedPLIBForCausalLM, embeds: torch.Tensor) -> dict[str, int]:
    lm = model.language_model

    def prefill():
        out = lm.model(inputs_embeds=embeds, use_cache=True)
        lm.lm_head(out.last_hidden_state[:, -1])
        return out

    prefill_flops = count_flops(prefill)
    cache = prefill().cache
    tok = lm.get_input_embeddings()(torch.tensor([[5]]))  # (1, 1, D)

    def step():
        out = lm.model(inputs_embeds=tok, cache=cache, use_cache=True)
        lm.lm_head(out.last_hidden_state[:, -1])

    return {"prefill": prefill_flops, "decode_token": count_flops(step)}


@torch.no_grad()
def _ffn_layer_times(
    moe: MedPLIBForCausalLM, dense: MedPLIBForCausalLM, tokens: int, s: MoEBenchSettings
) -> dict[str, float]:
    """Median seconds per call of layer 0's FFN alone, dense vs MoE, on (1, tokens, D)."""
    moe_ffn = moe_layers(moe.language_model)[0][1]
    dense_ffn = dense.language_model.model.layers[0].mlp
    x = torch.randn(1, tokens, moe.config.language.hidden_size)
    samples: dict[str, list[float]] = {"dense": [], "moe": []}
    ffns: dict[str, torch.nn.Module] = {"dense": dense_ffn, "moe": moe_ffn}

    def loop(name: str) -> None:
        for _ in range(s.layer_loops):
            ffns[name](x)

    for r in range(s.warmup + s.repeats):
        for name in ffns:
            t = timed(partial(loop, name)) / s.layer_loops
            if r >= s.warmup:
                samples[name].append(t)
    d, m = median(samples["dense"]), median(samples["moe"])
    return {"dense_s": d, "moe_s": m, "ratio": m / d}


def run(settings: MoEBenchSettings) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-ready result."""
    load_at_start = load_average()
    torch.set_num_threads(settings.threads)
    moe, dense = moe_and_dense(settings.size, settings.seed)
    embeds = prompt_embeddings(moe, settings.text_tokens, settings.seed)  # (1, L, D)
    models = {"dense": dense, "moe": moe}

    flops = {name: _flops(m, embeds) for name, m in models.items()}
    keys = ("prefill_s", "decode_token_s", "prefill_cpu_s", "decode_token_cpu_s")
    samples: dict[str, dict[str, list[float]]] = {n: {k: [] for k in keys} for n in models}
    for r in range(settings.warmup + settings.repeats):
        for name, model in models.items():
            t = timed_generate(model, embeds, settings.new_tokens)
            if r >= settings.warmup:
                got = samples[name]
                got["prefill_s"].append(t["prefill_s"])
                got["decode_token_s"].append(t["decode_s"] / t["steps"])
                got["prefill_cpu_s"].append(t["prefill_cpu_s"])
                got["decode_token_cpu_s"].append(t["decode_cpu_s"] / t["steps"])
    timing = {name: {k: median(v) for k, v in got.items()} for name, got in samples.items()}
    wall = {n: {k: v for k, v in t.items() if "cpu" not in k} for n, t in timing.items()}
    cpu = {n: {k: v for k, v in t.items() if "cpu" in k} for n, t in timing.items()}
    routing = moe_layers(moe.language_model)
    timed_generate(moe, embeds, 1)  # refresh the routing records on the prompt
    prompt_share = [
        blk.last_routing.expert_share() for _, blk in routing if blk.last_routing is not None
    ]
    ratios = {
        "flops_prefill": flops["moe"]["prefill"] / flops["dense"]["prefill"],
        "flops_decode_token": flops["moe"]["decode_token"] / flops["dense"]["decode_token"],
        "wall_prefill": wall["moe"]["prefill_s"] / wall["dense"]["prefill_s"],
        "wall_decode_token": wall["moe"]["decode_token_s"] / wall["dense"]["decode_token_s"],
        "cpu_prefill": cpu["moe"]["prefill_cpu_s"] / cpu["dense"]["prefill_cpu_s"],
        "cpu_decode_token": cpu["moe"]["decode_token_cpu_s"] / cpu["dense"]["decode_token_cpu_s"],
    }
    params = {
        name: sum(p.numel() for p in m.language_model.parameters()) for name, m in models.items()
    }
    return {
        "benchmark": "moe",
        "settings": asdict(settings),
        "prompt_tokens": int(embeds.shape[1]),
        "llm_parameters": params,
        "flops": flops,
        # When False, the L×L attention products are missing from both models' counts alike.
        "flops_include_attention_scores": attention_scores_counted(),
        "wall": wall,
        "cpu_time": cpu,
        "ratios": ratios,
        "targets": {"flops_ratio_max": FLOPS_RATIO_TARGET, "wall_ratio_max": WALL_RATIO_TARGET},
        "meets_targets": {
            "flops": max(ratios["flops_prefill"], ratios["flops_decode_token"])
            <= FLOPS_RATIO_TARGET,
            "wall": max(ratios["wall_prefill"], ratios["wall_decode_token"]) <= WALL_RATIO_TARGET,
        },
        "ffn_layer": {
            "decode_1_token": _ffn_layer_times(moe, dense, 1, settings),
            f"prefill_{int(embeds.shape[1])}_tokens": _ffn_layer_times(
                moe, dense, int(embeds.shape[1]), settings
            ),
        },
        "moe_prompt_expert_share": prompt_share,
        "machine": machine(settings.threads, load_at_start),
    }


def settings_from_args(args: argparse.Namespace) -> MoEBenchSettings:
    base = QUICK if args.quick else MoEBenchSettings()
    return MoEBenchSettings(
        size=base.size,
        text_tokens=base.text_tokens,
        new_tokens=args.new_tokens or base.new_tokens,
        repeats=args.repeats or base.repeats,
        warmup=base.warmup,
        layer_loops=base.layer_loops,
        threads=args.threads,
        seed=base.seed,
    )
