"""`medplib convert`: bring checkpoints from other layouts into this project's layout.

    medplib convert official SRC DST [--clip DIR] [--sam sam-med2d_b.pth] [--preset NAME]

prints a JSON report (tensor counts per source, ignored buffers, checkpoint id) on success.
"""

from __future__ import annotations

import argparse
import json
import re

from medplib.errors import UserInputError

# Names only: torch is imported when the command runs, so `medplib --help` stays fast.
DTYPES = ("keep", "float32", "bfloat16", "float16")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(i)?)?b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'5GB', '500MB', '2GiB' or a plain byte count → bytes."""
    m = _SIZE.match(text)
    if not m:
        raise UserInputError(
            f"--max-shard-size {text!r} is not a size; write e.g. 5GB, 500MB or 2GiB."
        )
    number, prefix, binary = float(m.group(1)), m.group(2), m.group(3)
    scale = (1024 if binary else 1000) ** ("kmgt".index(prefix.lower()) + 1) if prefix else 1
    size = int(number * scale)
    if size < 1:
        raise UserInputError(f"--max-shard-size must be at least 1 byte, got {text!r}.")
    return size


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("convert", help="convert checkpoints into this project's layout")
    csub = p.add_subparsers(dest="convert_command", metavar="FORMAT")
    csub.required = True
    o = csub.add_parser(
        "official",
        help="the released MedPLIB checkpoint (e.g. MedPLIB-7b-2e) → this project's layout",
        description=(
            "Convert the published MedPLIB checkpoint directory (safetensors and/or .bin shards, "
            "config.json, tokenizer) into a directory that `medplib predict --checkpoint` loads."
        ),
    )
    o.add_argument("src", metavar="SRC", help="downloaded official checkpoint directory")
    o.add_argument("dst", metavar="DST", help="output directory (must be new or empty)")
    o.add_argument(
        "--clip", metavar="PATH", help="CLIP checkpoint dir, if SRC lacks the vision tower"
    )
    o.add_argument("--sam", metavar="PATH", help="sam-med2d_b.pth, if SRC lacks SAM-Med2D")
    o.add_argument(
        "--preset",
        default="medplib-7b-2e",
        help="architecture the checkpoint was made from (sizes are read from the weights)",
    )
    o.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="keep",
        help="cast floating weights (router weights stay float32); default: keep as stored",
    )
    o.add_argument("--name", help="model name recorded in config.json (default: SRC's folder name)")
    o.add_argument(
        "--max-shard-size",
        default="5GiB",
        help="largest output shard, e.g. 5GB (default: 5GiB, as save_pretrained)",
    )
    o.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow .bin/.pth files holding Python objects besides tensors (trusted sources only)",
    )
    o.add_argument("--overwrite", action="store_true", help="replace a non-empty DST")
    o.set_defaults(func=run_official)


def run_official(args: argparse.Namespace) -> int:
    import torch

    from medplib.convert import convert_official

    report = convert_official(
        args.src,
        args.dst,
        clip=args.clip,
        sam=args.sam,
        preset=args.preset,
        dtype=None if args.dtype == "keep" else getattr(torch, args.dtype),
        name=args.name,
        max_shard_bytes=parse_size(args.max_shard_size),
        trust_pickle=args.trust_pickle,
        overwrite=args.overwrite,
    )
    print(json.dumps(report.to_dict(), indent=2))
    return 0
