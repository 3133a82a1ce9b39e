"""Decoding speed with and without the KV cache, and the peak memory of each, on two model sizes.

Uses the project's decoding loop (`medplib.generation.generate`) on a random image + question,
greedy, never stopping early. Without the cache every step re-runs the whole sequence, so
its cost grows with the answer length; the cache makes each step one token's work.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

import torch

from medplib.bench.measure import (
    QUICK_SIZE,
    LLMSize,
    PeakRSS,
    bench_config,
    load_average,
    machine,
    median,
    prompt_embeddings,
    timed_generate,
)
from medplib.modeling.configuration import MedPLIBConfig
from medplib.modeling.medplib import MedPLIBForCausalLM
from medplib.modeling.presets import build_config

MID = LLMSize()  # hidden 1024, 4 layers, 256 visual tokens: the MoE benchmark's size


@dataclass(frozen=True)
class GenerateBenchSettings:
    sizes: tuple[str, ...] = ("tiny", "mid")
    mid: LLMSize = MID
    text_tokens: int = 32  # question tokens after the visual tokens
    new_tokens: int = 32
    repeats: int = 5  # timed runs per (size, mode); the median is reported
    warmup: int = 1
    threads: int = 2
    seed: int = 0


QUICK = GenerateBenchSettings(
    mid=QUICK_SIZE,
    text_tokens=8,
    new_tokens=3,
    repeats=1,
    warmup=0,
)


def _model(name: str, s: GenerateBenchSettings) -> MedPLIBForCausalLM:
    torch.manual_seed(s.seed)
    config: MedPLIBConfig = build_config("tiny") if name == "tiny" else bench_config(s.mid, 2)
    config.seg_token_id = None
    return MedPLIBForCausalLM(config).eval()


_MODES = {"kv_cache": True, "no_cache": False}


def _timings(
    model: MedPLIBForCausalLM, embeds: torch.Tensor, s: GenerateBenchSettings
) -> dict[str, dict[str, float]]:
    """Per mode: median wall and CPU timings; modes alternate so load changes hit both alike."""
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in _MODES}
    for r in range(s.warmup + s.repeats):
        for name, use_cache in _MODES.items():
            t = timed_generate(model, embeds, s.new_tokens, use_cache)
            if r >= s.warmup:
                runs[name].append(t)
    out = {}
    for name, ts in runs.items():
        steps = ts[0]["steps"]  # forward passes after the prefill
        decode, decode_cpu = (
            median([t["decode_s"] for t in ts]),
            median([t["decode_cpu_s"] for t in ts]),
        )
        out[name] = {
            "prefill_s": median([t["prefill_s"] for t in ts]),
            "decode_s": decode,
            "decode_tokens_per_s": steps / decode,
            "end_to_end_tokens_per_s": s.new_tokens
            / median([t["prefill_s"] + t["decode_s"] for t in ts]),
            "decode_cpu_s": decode_cpu,
            "decode_tokens_per_cpu_s": steps / decode_cpu,
        }
    return out


def _memory(
    model: MedPLIBForCausalLM, embeds: torch.Tensor, s: GenerateBenchSettings
) -> dict[str, dict[str, Any]]:
    """Per mode: resident-memory growth during one run (KV cache, activations, logits)."""
    out = {}
    for name, use_cache in _MODES.items():
        timed_generate(model, embeds, s.new_tokens, use_cache)  # first-call allocations
        with PeakRSS() as mem:
            timed_generate(model, embeds, s.new_tokens, use_cache)
        out[name] = {"peak_rss_delta_bytes": mem.delta_bytes, "memory_method": mem.method}
    return out


def run(settings: GenerateBenchSettings) -> dict[str, Any]:
    load_at_start = load_average()
    torch.set_num_threads(settings.threads)
    models = {name: _model(name, settings) for name in settings.sizes}
    embeds = {
        name: prompt_embeddings(m, settings.text_tokens, settings.seed)
        for name, m in models.items()
    }
    # All timings first: measuring memory changes the allocator's settings for the process.
    timings = {name: _timings(m, embeds[name], settings) for name, m in models.items()}
    results: dict[str, Any] = {}
    for name, model in models.items():
        memory = _memory(model, embeds[name], settings)
        with_cache = timings[name]["kv_cache"] | memory["kv_cache"]
        without = timings[name]["no_cache"] | memory["no_cache"]
        cfg = model.config.language
        results[name] = {
            "llm": {
                "hidden_size": cfg.hidden_size,
                "num_layers": cfg.num_layers,
                "num_experts": model.config.moe.num_experts,
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            "prompt_tokens": int(embeds[name].shape[1]),
            "new_tokens": settings.new_tokens,
            "kv_cache": with_cache,
            "no_cache": without,
            "speedup_decode": with_cache["decode_tokens_per_s"] / without["decode_tokens_per_s"],
            "speedup_decode_cpu": with_cache["decode_tokens_per_cpu_s"]
            / without["decode_tokens_per_cpu_s"],
        }
    return {
        "benchmark": "generate",
        "settings": asdict(settings),
        "sizes": results,
        "machine": machine(settings.threads, load_at_start),
    }


def settings_from_args(args: argparse.Namespace) -> GenerateBenchSettings:
    base = QUICK if args.quick else GenerateBenchSettings()
    return GenerateBenchSettings(
        sizes=base.sizes,
        mid=base.mid,
        text_tokens=base.text_tokens,
        new_tokens=args.new_tokens or base.new_tokens,
        repeats=args.repeats or base.repeats,
        warmup=base.warmup,
        threads=args.threads,
        seed=base.seed,
    )


__all__ = ["GenerateBenchSettings", "run", "settings_from_args"]
