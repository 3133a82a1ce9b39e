"""Registers the model benchmarks under `medplib bench` (the platform's `register_bench` calls
`register` with the benchmark sub-parsers)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from medplib.errors import UserInputError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--repeats", type=int, help="timed runs per measurement (median reported)")
    p.add_argument("--new-tokens", type=int, help="tokens decoded per run")
    # Tiny sizes and single runs: checks the plumbing in seconds; the timings mean nothing.
    p.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)


def register(bsub: Any) -> None:
    moe = bsub.add_parser(
        "moe", help="dense vs 2-expert top-1 MoE: forward FLOPs and CPU wall time, side by side"
    )
    _common(moe)
    moe.set_defaults(func=_run_moe)
    gen = bsub.add_parser(
        "generate", help="decoding tokens/s with vs without the KV cache, and peak memory"
    )
    _common(gen)
    gen.set_defaults(func=_run_generate)
    pred = bsub.add_parser(
        "predict", help="seconds per question of a checkpoint (image encoding + answer), p50/p95"
    )
    _common(pred)
    pred.add_argument(
        "--checkpoint", help="checkpoint folder (default: the one `make demo` serves)"
    )
    pred.add_argument("--questions", type=int, help="questions timed (default 50)")
    pred.add_argument(
        "--no-mirror-tta",
        action="store_true",
        help="plain decode (masks and left/right answers) even where the checkpoint's config "
        "turns the mirror on",
    )
    pred.add_argument(
        "--side-questions",
        action="store_true",
        help="ask on which side a structure lies instead of whether it is there",
    )
    pred.add_argument(
        "--region-questions",
        action="store_true",
        help="mark a structure's region and ask whether it is a named structure instead",
    )
    pred.add_argument(
        "--no-presence-check",
        action="store_true",
        help="answer presence and region questions without checking unsure ones against the "
        "structure's mask",
    )
    pred.add_argument(
        "--questions-per-image",
        type=int,
        help="questions asked in a row about each image (default 1: a new image each time)",
    )
    pred.add_argument(
        "--no-prompt-reuse",
        action="store_true",
        help="run every prompt whole instead of running the system prompt and visual tokens "
        "once per image",
    )
    pred.set_defaults(func=_run_predict)


def _check(args: argparse.Namespace) -> None:
    for flag, value, least in (
        ("--threads", args.threads, 1),
        ("--repeats", args.repeats, 1),
        ("--new-tokens", args.new_tokens, 2),
        ("--questions", getattr(args, "questions", None), 1),
        ("--questions-per-image", getattr(args, "questions_per_image", None), 1),
    ):
        if value is not None and value < least:
            raise UserInputError(f"{flag} must be at least {least}, got {value}.")
    if getattr(args, "side_questions", False) and getattr(args, "region_questions", False):
        raise UserInputError(
            "--side-questions and --region-questions ask different closed questions; choose one."
        )


def _run_moe(args: argparse.Namespace) -> int:
    from medplib.bench import moe

    _check(args)
    print(json.dumps(moe.run(moe.settings_from_args(args)), indent=2))
    return 0


def _run_generate(args: argparse.Namespace) -> int:
    from medplib.bench import generate

    _check(args)
    print(json.dumps(generate.run(generate.settings_from_args(args)), indent=2))
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    from medplib.bench import predict

    _check(args)
    print(json.dumps(predict.run(predict.settings_from_args(args)), indent=2))
    return 0
