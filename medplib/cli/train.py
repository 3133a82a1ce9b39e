"""`medplib train`: run one stage of MedPLIB's training (align → vl → grounding → moe).

Multi-GPU and multi-node runs go through accelerate, e.g.
``accelerate launch --config_file ACC.yaml -m medplib.cli train --stage vl …``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medplib.errors import UserInputError

STAGE_HELP = """stages:
  align      tiny presets only (stands in for pretrained weights): trains the tokenizer, then
             CLIP + projector + language model on the corpus text, SAM-Med2D on box / point
             prompts and the [SEG] path on the grounding answers
  vl         the vision-language expert on complex + region VQA (region adapter trained)
  grounding  the pixel-grounding expert (--init = vl output): FFNs, [SEG] head, mask decoder
  moe        assembles --experts VL GROUNDING into a 2-expert MoE and fine-tunes on all tasks,
             or (--init MOE_DIR) fine-tunes an existing MoE checkpoint further, e.g. the shipped
             medplib/assets/tiny-demo on a corpus from `medplib review export-dataset`"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train",
        help="train one stage of MedPLIB",
        epilog=STAGE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--stage", required=True, choices=("align", "vl", "grounding", "moe"))
    p.add_argument(
        "--config", required=True, type=Path, help="stage YAML, e.g. configs/tiny/vl.yaml"
    )
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        help="corpus folder from `medplib data build` (or `medplib review export-dataset`)",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder of this stage")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        help="vl / grounding: the previous stage's --out; moe (instead of --experts): "
        "a mixture-of-experts checkpoint to fine-tune",
    )
    p.add_argument(
        "--experts",
        nargs=2,
        type=Path,
        default=None,
        metavar=("VL_DIR", "GROUNDING_DIR"),
        help="moe (instead of --init): the vl and grounding stages' --out folders",
    )
    p.add_argument(
        "--export", type=Path, default=None, help="also write the final checkpoint here in fp16"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from medplib.train import load_config, run_stage

    config = load_config(args.config)
    if config.stage != args.stage:
        raise UserInputError(
            f"{args.config} is a {config.stage} config but --stage is {args.stage}; "
            "pass the matching file."
        )
    result = run_stage(
        config,
        args.data,
        args.out,
        init_dir=args.init,
        experts=tuple(args.experts) if args.experts else None,
        resume=args.resume,
        export_dir=args.export,
        progress=not args.no_progress,
    )
    if result.message:
        print(f"medplib train: {result.message}")
    if result.complete and not result.message:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(result.metrics.items()))
        print(
            f"{result.stage}: {result.step} steps ({result.steps_per_second:.2f} steps/s) → "
            f"{result.out_dir}" + (f"; {shown}" if shown else "")
        )
    return 0
