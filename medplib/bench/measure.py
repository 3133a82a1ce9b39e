"""Measurement helpers shared by the model benchmarks: models at benchmark sizes, timing, memory."""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from medplib.generation import generate
from medplib.modeling.batching import clip_and_sam_inputs
from medplib.modeling.configuration import (
    MedPLIBConfig,
    MoEConfig,
    ProjectorConfig,
    RegionEncoderConfig,
    SegHeadConfig,
)
from medplib.modeling.medplib import MedPLIBForCausalLM
from medplib.modeling.presets import build_config
from medplib.tokenization import IMAGE_SENTINEL


@dataclass(frozen=True)
class LLMSize:
    """LLM shape of a benchmark model; vision and SAM stay at the tiny preset's size."""

    hidden_size: int = 1024  # smallest width where CPU matmuls, not per-op overhead, dominate
    intermediate_size: int = 2816  # ≈ LLaMA's 11008/4096 FFN ratio at width 1024
    num_layers: int = 4
    num_heads: int = 16  # head dim 64, as in LLaMA-7B (4096 / 32)
    vocab_size: int = 8192  # keeps the LM head from dominating a 4-layer model
    image_px: int = 224  # 224 / 14 = 16 → 256 visual tokens


# The size `--quick` runs use: seconds on a CPU, same code path.
QUICK_SIZE = LLMSize(
    hidden_size=128, intermediate_size=344, num_layers=2, num_heads=4, vocab_size=512, image_px=112
)


def bench_config(size: LLMSize, num_experts: int) -> MedPLIBConfig:
    """The tiny preset with the LLM (and the CLIP grid) scaled to `size`."""
    cfg = build_config("tiny")
    d = size.hidden_size
    cfg.name = f"bench-{d}x{size.num_layers}-{num_experts}e"
    cfg.language.llama = dict(
        cfg.language.llama,
        hidden_size=d,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        num_key_value_heads=size.num_heads,
        vocab_size=size.vocab_size,
        max_position_embeddings=4096,
    )
    cfg.vision.clip = dict(cfg.vision.clip, image_size=size.image_px, patch_size=14)
    c = cfg.vision.hidden_size
    cfg.projector = ProjectorConfig("mlp2x_gelu", c, d)
    cfg.region = RegionEncoderConfig(c, d)
    cfg.seg_head = SegHeadConfig(d, d, cfg.seg_head.out_features)
    cfg.moe = MoEConfig(num_experts=num_experts)
    cfg.validate()
    return cfg


def moe_and_dense(size: LLMSize, seed: int = 0) -> tuple[MedPLIBForCausalLM, MedPLIBForCausalLM]:
    """A random 2-expert MoE model and the dense model equal to it with every token on expert 0.

    Sharing all other weights makes both see identical prompt embeddings.
    """
    torch.manual_seed(seed)
    moe = MedPLIBForCausalLM(bench_config(size, 2)).eval()
    dense = MedPLIBForCausalLM(bench_config(size, 1)).eval()
    state = {}
    for key, value in moe.state_dict().items():
        if ".mlp.router." in key or ".mlp.experts.1." in key:
            continue
        state[key.replace(".mlp.experts.0.", ".mlp.")] = value
    dense.load_state_dict(state, strict=True)
    return moe, dense


@torch.no_grad()
def prompt_embeddings(model: MedPLIBForCausalLM, text_tokens: int, seed: int = 0) -> torch.Tensor:
    """(1, N + text_tokens, D): a random image's visual tokens after BOS, then random text ids."""
    gen = np.random.default_rng(seed)
    size = model.config.vision.image_size
    rgb = gen.integers(0, 256, (size, size, 3), dtype=np.uint8)
    clip_pixels = clip_and_sam_inputs(rgb, model.config)[0][None]  # (1, 3, S, S)
    _, visual = model.encode_clip(clip_pixels)  # (1, N, D)
    vocab = model.config.language.vocab_size
    text = torch.from_numpy(gen.integers(3, vocab, text_tokens - 1)).long()
    ids = torch.cat([torch.tensor([1, IMAGE_SENTINEL]), text])[None]  # BOS, image, text
    embeds, _, _, _ = model.assemble_embeddings(ids, None, visual)
    return embeds


def count_flops(fn: Callable[[], Any]) -> int:
    """Forward FLOPs of `fn()` as counted by torch's FlopCounterMode (matmuls and attention)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def attention_scores_counted() -> bool:
    """Whether FlopCounterMode counts SDPA here (it has no formula for some CPU kernels)."""
    q = torch.randn(1, 2, 8, 16)
    return count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q)) > 0


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def timed_generate(
    model: MedPLIBForCausalLM, embeds: torch.Tensor, new_tokens: int, use_cache: bool = True
) -> dict[str, float]:
    """One `generate` call: wall and process-CPU seconds for the prefill and the decode loop.

    CPU time (all threads of this process) hardly moves when other processes share the
    cores, so its ratios stay readable on a busy machine where wall time does not.
    """
    first: list[float] = []

    def on_token(step: int, _token: int) -> None:
        if step == 0:
            first.append(time.process_time())

    c0 = time.process_time()
    res = generate(
        model,
        embeds,
        max_new_tokens=new_tokens,
        stop_token_ids=(),
        use_cache=use_cache,
        on_token=on_token,
    )
    c1 = time.process_time()
    return {
        "prefill_s": res.prefill_s,
        "decode_s": res.decode_s,
        "prefill_cpu_s": first[0] - c0,
        "decode_cpu_s": c1 - first[0],
        "steps": max(len(res.token_ids) - 1, 1),  # forward passes after the prefill
    }


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (empty where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine(threads: int, load_at_start: list[float] | None = None) -> dict[str, Any]:
    """Where the numbers came from; load averages above the thread count mean shared CPUs."""
    return {
        "cpu": cpu_name(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": load_average(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


# ---------------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def _glibc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both must exist
        return libc
    except (OSError, AttributeError):
        return None


class PeakRSS:
    """Peak resident memory of this process over a block, relative to its start.

    On Linux the kernel's high-water mark is reset first (``/proc/self/clear_refs``), so the
    peak belongs to the block alone. With glibc, blocks of 1 MiB and more are set to be mapped
    and unmapped individually and the heap is trimmed first; otherwise memory freed by an
    earlier run stays resident and the next run's working set would not show. Elsewhere it
    falls back to ``ru_maxrss``, which only reports growth beyond the earlier peak.
    """

    def __init__(self) -> None:
        self.method = "unavailable"
        self.start_bytes = 0
        self.peak_bytes = 0

    def __enter__(self) -> PeakRSS:
        libc = _glibc()
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)  # fixed: no dynamic threshold growth
            libc.mallopt(_M_TRIM_THRESHOLD, 1 << 20)
            libc.malloc_trim(0)
        try:
            Path("/proc/self/clear_refs").write_text("5")
            rss = _status_kib("VmRSS")
            if rss is None:
                raise OSError
            self.method, self.start_bytes = "VmHWM", rss * 1024
        except OSError:
            self.method = "ru_maxrss"
            self.start_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if libc is not None:
            self.method += "+glibc-unmap"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.method.startswith("VmHWM"):
            self.peak_bytes = (_status_kib("VmHWM") or 0) * 1024
        else:
            self.peak_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @property
    def delta_bytes(self) -> int:
        return max(0, self.peak_bytes - self.start_bytes)
