"""Full-size MedPLIB-7b-2e on one GPU with random weights: memory, prefill time, decode speed.

    python benchmarks/gpu_7b.py                 # medplib-7b-2e, bf16, cuda
    python benchmarks/gpu_7b.py --device cpu --preset tiny   # the same path in seconds

The model is created on the meta device and materialised directly on the target device in the
target dtype (``to_empty`` + in-place random init), so host memory never holds the ≈47 GB an
fp32 CPU build of 11.7 B parameters would take. One request is then timed end to end: CLIP and
SAM-Med2D image encoding (a 336 px image → 576 visual tokens), prefill of BOS + image + a
64-token question, 32 greedily decoded tokens with the KV cache, and a ``<SEG>`` mask decode
from the last predicting hidden state. Prints one JSON object (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO))

from transformers import DynamicCache  # noqa: E402

from medplib.checkpoint import default_dtype  # noqa: E402
from medplib.modeling.batching import clip_and_sam_inputs  # noqa: E402
from medplib.modeling.medplib import MedPLIBForCausalLM  # noqa: E402
from medplib.modeling.presets import PRESETS, build_config  # noqa: E402
from medplib.tokenization import ADDED_TOKENS, IMAGE_SENTINEL  # noqa: E402

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
INIT_STD = 0.02  # LLaMA's initializer_range; keeps random activations finite through 32 layers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="gpu_7b.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--preset", default="medplib-7b-2e", choices=sorted(PRESETS))
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:1, cpu …")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", *DTYPES],
        help="auto: bfloat16 on GPU (float16 where bf16 is unsupported), float32 on CPU",
    )
    p.add_argument("--image-px", type=int, default=512, help="side of the random input image")
    p.add_argument("--question-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--warmup", type=int, default=1, help="untimed full requests first")
    p.add_argument("--repeats", type=int, default=3, help="timed requests; medians reported")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    for name in ("image_px", "question_tokens", "new_tokens", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be 0 or more")
    return args


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: non-finite floats become null, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(_finite(result), indent=2, sort_keys=True, allow_nan=False)


def write_json(result: dict[str, Any], path: Path | None) -> str:
    """The result as strict JSON text; also written to `path` (parents created) when given."""
    text = to_json(result)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return text


# ---------------------------------------------------------------------------------- model
def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name != "auto":
        return DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


@torch.no_grad()
def init_random_(model: torch.nn.Module, seed: int, device: torch.device) -> None:
    """LLaMA-style random init in place: matrices N(0, 0.02), biases 0, norm scales 1."""
    if device.type == "meta":
        return  # shapes-only dry run: there is no storage to fill
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, p in model.named_parameters():
        if p.ndim >= 2 or name.endswith("class_embedding"):
            p.normal_(0.0, INIT_STD, generator=gen)
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.fill_(1.0)


def build_random_model(
    preset: str, device: torch.device, dtype: torch.dtype, seed: int
) -> MedPLIBForCausalLM:
    """Random-weight model built on meta, then allocated once on `device` in `dtype`."""
    from accelerate import init_empty_weights

    config = build_config(preset)
    # <SEG> is the first token after the base vocabulary, as in the official tokenizer.
    config.seg_token_id = config.language.vocab_size - len(ADDED_TOKENS)
    with init_empty_weights(include_buffers=False), default_dtype(dtype):
        model = MedPLIBForCausalLM(config)  # parameters on meta, buffers real on CPU
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    model.to_empty(device=device)
    init_random_(model, seed, device)
    with torch.no_grad():
        for n, b in model.named_buffers():
            b.copy_(buffers[n])  # RoPE frequencies, CLIP position ids, SAM pixel statistics
    return model.eval()


# ---------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn: Callable[[], Any]) -> tuple[Any, float]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


@torch.no_grad()
def one_request(
    model: MedPLIBForCausalLM, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    """Encode, prefill, decode `new_tokens`, decode one <SEG> mask; returns seconds per phase."""
    config = model.config
    rng = np.random.default_rng(args.seed)
    rgb = rng.integers(0, 256, (args.image_px, args.image_px, 3), dtype=np.uint8)
    clip_px, _, sam_px, sam_hw = clip_and_sam_inputs(rgb, config)
    (_, visual), encode_clip_s = _timed(device, lambda: model.encode_clip(clip_px[None].to(device)))
    sam_emb, encode_sam_s = _timed(device, lambda: model.encode_sam(sam_px[None].to(device)))
    vocab = config.language.vocab_size
    question = rng.integers(3, vocab - len(ADDED_TOKENS), args.question_tokens)
    ids = torch.tensor([[1, IMAGE_SENTINEL, *question.tolist()]], device=device)
    embeds, _, _, _ = model.assemble_embeddings(ids, None, visual)  # (1, L, D)
    lm = model.language_model

    past = DynamicCache(config=lm.config)  # filled in place by prefill, then each step

    def prefill():
        out = lm.model(inputs_embeds=embeds, cache=past, use_cache=True)
        return out, out.last_hidden_state[0, -1]

    (out, h), prefill_s = _timed(device, prefill)
    embed = lm.get_input_embeddings()

    def decode():
        hidden = h
        for _ in range(args.new_tokens):
            tok = int(torch.argmax(lm.lm_head(hidden)))  # greedy; syncs like a real loop
            step = lm.model(
                inputs_embeds=embed(torch.tensor([[tok]], device=device)),
                cache=past,
                use_cache=True,
            )
            hidden = step.last_hidden_state[0, -1]
        return hidden

    last_hidden, decode_s = _timed(device, decode)
    # The state after the last decoded token is the one that would predict <SEG>.
    (masks, _), seg_s = _timed(
        device,
        lambda: model.decode_masks(
            last_hidden[None],
            sam_emb,
            torch.zeros(1, dtype=torch.long, device=device),
            [sam_hw],
            [(args.image_px, args.image_px)],
        ),
    )
    return {
        "prompt_tokens": int(embeds.shape[1]),
        "encode_clip_s": encode_clip_s,
        "encode_sam_s": encode_sam_s,
        "prefill_s": prefill_s,
        "decode_s": decode_s,
        "seg_decode_s": seg_s,
        "mask_hw": list(masks[0].shape),
        "mask_finite": bool(torch.isfinite(masks[0]).all()),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_7b.py: no CUDA device is available; pass --device cpu --preset tiny")
    dtype = resolve_dtype(args.dtype, device)
    torch.manual_seed(args.seed)
    result: dict[str, Any] = {
        "benchmark": "gpu_7b",
        "preset": args.preset,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    model, build_s = _timed(
        device, lambda: build_random_model(args.preset, device, dtype, args.seed)
    )
    params = list(model.parameters())
    result["build_s"] = build_s
    result["parameters"] = sum(p.numel() for p in params)
    result["weights_bytes"] = sum(p.numel() * p.element_size() for p in params)
    if device.type == "cuda":
        result["memory_after_build_bytes"] = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        one_request(model, args, device)
    runs = [one_request(model, args, device) for _ in range(args.repeats)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k.endswith("_s")}
    result.update(
        prompt_tokens=runs[0]["prompt_tokens"],
        new_tokens=args.new_tokens,
        timings_median_s=med,
        decode_tokens_per_s=args.new_tokens / med["decode_s"],
        mask_hw=runs[0]["mask_hw"],
        mask_finite=all(r["mask_finite"] for r in runs),
        runs=runs,
    )
    if device.type == "cuda":
        result["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
        result["peak_memory_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
        code = 0
    except torch.OutOfMemoryError as exc:
        result = {"benchmark": "gpu_7b", "preset": args.preset, "error": f"out of memory: {exc}"}
        code = 1
    except Exception as exc:  # a prepared GPU session should still leave a readable record
        result = {
            "benchmark": "gpu_7b",
            "preset": args.preset,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
        code = 1
    print(write_json(result, args.out))
    return code


if __name__ == "__main__":
    sys.exit(main())
