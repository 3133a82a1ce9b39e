"""Ablation at tiny scale: does the multi-stage MoE beat simpler recipes for the same budget?

    python benchmarks/ablation.py --data var/demo-corpus --out var/ablation --budget-minutes 40
    python benchmarks/ablation.py --data var/demo-corpus --out var/ablation \
        --align var/demo-train/align --budget-steps 1000      # as in benchmarks/ablation.md
    python benchmarks/ablation.py --quick --out /tmp/ablation      # minutes: the path, not numbers

Every variant starts from the same `align` checkpoint (trained once, shared; at tiny scale
align already trains the text-prompted grounding path, see configs/tiny/align.yaml) and then
gets the same number of training samples, `budget` optimizer steps of the same batch size:

  (a) joint      one dense model trained on VQA + region + grounding together (stage-IV losses)
  (b) vl         the vision-language stage only
  (c) grounding  the grounding recipe only (FFNs, [SEG] head, mask decoder; stage-III losses)
  (d) moe        the full pipeline: vl → grounding → moe, the budget split between the
                 stages as configs/tiny splits `make demo-model`'s steps (--moe-split to change)

(a) and (c) run through the `vl` stage (which starts from align) with their own data, losses
and trainable modules; (d) is exactly `make demo-model`'s recipe, shortened. Columns, all on
the corpus's holdout split with greedy answers:

  grounding mDice (synthetic / real holdout), masks at sigmoid > 0.5 (0.1 in the JSON)
  closed accuracy (VQA questions with answer_type closed)
  region accuracy (closed region questions by answer; open ones by the first structure named)
  inference MFLOPs per token (torch.utils.flop_counter over one prompt's forward)

Prints the table (markdown) and writes OUT/ablation.json and OUT/ablation.md. Re-running with
the same arguments reuses finished runs and their evaluations (ablation-eval.json in each), so
`--variants joint vl` and `--variants grounding moe` can train on one core each, side by side,
and a last call without --variants gathers the table.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO))

from medplib.data.mecovqa import LoadedSample, MeCoVQADataset  # noqa: E402
from medplib.eval.corpus import evenly_spaced  # noqa: E402
from medplib.metrics import closed_accuracy, dice, first_structure  # noqa: E402
from medplib.predictor import MedPLIBPredictor  # noqa: E402
from medplib.train import config_from_dict, run_stage  # noqa: E402
from medplib.train.data import to_model_sample  # noqa: E402
from medplib.train.preflight import read_state  # noqa: E402

CONFIGS = REPO / "configs" / "tiny"
# Mean seconds per optimizer step (batch 16) over the stages on 2 idle CPU cores; converts
# --budget-minutes into steps.
SECONDS_PER_STEP = 0.4
VARIANTS = ("joint", "vl", "grounding", "moe")
# Everything some stage of the full recipe trains after align (CLIP in vl, all of SAM-Med2D
# in grounding), so the joint model is not handicapped by frozen towers.
JOINT_MODULES = [
    "vision_tower.*",
    "projector.*",
    "region_encoder.*",
    "language_model.*",
    "seg_head.*",
    "sam.*",
]
ALL_TASKS = {"vqa": 1.0, "region": 1.0, "grounding": 1.0}


def base_config(stage: str) -> dict[str, Any]:
    return yaml.safe_load((CONFIGS / f"{stage}.yaml").read_text())


def recipe_split() -> dict[str, float]:
    """Fractions of the post-align steps each stage gets in configs/tiny (`make demo-model`), so
    the moe variant is the shipped recipe shortened, not a split chosen for the ablation."""
    steps = {s: int(base_config(s)["loop"]["steps"]) for s in ("vl", "grounding", "moe")}
    total = sum(steps.values())
    return {s: n / total for s, n in steps.items()}


def stage_steps(split: dict[str, float], budget: int) -> dict[str, int]:
    """Whole steps per stage summing to `budget` (largest remainders), at least one each."""
    raw = {s: f * budget for s, f in split.items()}
    steps = {s: max(1, int(v)) for s, v in raw.items()}
    by_remainder = sorted(raw, key=lambda s: raw[s] - int(raw[s]), reverse=True)
    i = 0
    while sum(steps.values()) < budget:
        steps[by_remainder[i % len(by_remainder)]] += 1
        i += 1
    return steps


def shaped(
    config: dict[str, Any], steps: int, args: argparse.Namespace, **changes: Any
) -> dict[str, Any]:
    """A copy of a tiny stage config with the ablation's length, batch and data caps."""
    out = copy.deepcopy(config)
    for key, value in changes.items():
        out[key] = value
    loop = out.setdefault("loop", {})
    loop["steps"] = max(1, steps)
    loop["batch_size"] = args.batch_size
    loop["eval_every"] = 0
    loop["checkpoint_every"] = max(50, steps // 4)
    loop["log_every"] = max(1, min(10, steps // 10))
    d = out.setdefault("data", {})
    d["val_records"] = args.val_records
    if args.max_records is not None:
        d["max_records"] = args.max_records
    return out


def variant_plans(
    args: argparse.Namespace, budget: int, moe_steps: dict[str, int]
) -> dict[str, list[tuple[str, dict]]]:
    """variant → [(stage, config dict)] in order; `moe_steps`: the moe variant's stage lengths."""
    vl, gr, moe = base_config("vl"), base_config("grounding"), base_config("moe")
    joint = shaped(
        vl,
        budget,
        args,
        data={**vl["data"], "tasks": dict(ALL_TASKS)},
        losses=dict(moe["losses"]),
        train_modules=list(JOINT_MODULES),
    )
    joint["model"] = {"name": "ablation-joint"}
    grounding_only = shaped(
        vl,
        budget,
        args,
        data={**gr["data"], "tasks": {"grounding": 1.0}},
        losses=dict(gr["losses"]),
        train_modules=list(gr["train_modules"]),
        optim=dict(gr["optim"]),
    )
    grounding_only["model"] = {"name": "ablation-grounding"}
    vl_only = shaped(vl, budget, args)
    vl_only["model"] = {"name": "ablation-vl"}
    return {
        "joint": [("vl", joint)],
        "vl": [("vl", vl_only)],
        "grounding": [("vl", grounding_only)],
        "moe": [
            ("vl", shaped(vl, moe_steps["vl"], args)),
            ("grounding", shaped(gr, moe_steps["grounding"], args)),
            ("moe", shaped(moe, moe_steps["moe"], args)),
        ],
    }


def train_variant(
    name: str, plan: list[tuple[str, dict]], data: Path, runs: Path, align: Path
) -> Path:
    prev: dict[str, Path] = {"align": align}
    out = runs / name
    for stage, cfg in plan:
        target = out / stage
        kwargs: dict[str, Any] = {}
        if stage == "align":
            pass
        elif stage == "vl":
            kwargs["init_dir"] = align
        elif stage == "grounding":
            kwargs["init_dir"] = prev["vl"]
        else:
            kwargs["experts"] = (prev["vl"], prev["grounding"])
        result = run_stage(
            config_from_dict(cfg, source=f"{name}/{stage}"),
            data,
            target,
            resume=True,
            progress=False,
            **kwargs,
        )
        print(f"  {name}/{stage}: {result.step} steps {result.message}", file=sys.stderr)
        prev[stage] = target
    return out / plan[-1][0]


# ----------------------------------------------------------------------------- evaluation
def _class_names(data: Path) -> dict[int, str]:
    path = data / "classes.json"
    if not path.is_file():
        return {}
    return {int(k): v for k, v in json.loads(path.read_text()).items()}


def _region_class(sample: LoadedSample) -> int | None:
    paths = [p for t in sample.sample.turns for p in t.region_mask_paths]
    m = re.search(r"--(\d{4})_\d{3}\.png$", paths[0]) if paths else None
    return int(m.group(1)) if m else None


def _question(sample: LoadedSample) -> str:
    return sample.turns[0].question.replace("<image>", "").strip()


def _load(data: Path, task: str, limit: int, keep) -> list[LoadedSample]:
    path = data / task / "holdout.json"
    if not path.is_file():
        return []
    try:
        ds = MeCoVQADataset(path, data)
    except ValueError:
        return []
    # Evenly spaced: the files are sorted by modality, so the first `limit` would be CT and MR.
    picked = evenly_spaced([i for i, s in enumerate(ds.samples) if keep(s)], limit)
    return [ds[i] for i in picked]


def evaluate(checkpoint: Path, data: Path, limit: int, max_new_tokens: int) -> dict[str, Any]:
    predictor = MedPLIBPredictor.from_pretrained(checkpoint)
    row: dict[str, Any] = {}
    for label, keep in (
        ("synthetic", lambda s: s.source == "synthetic"),
        ("real", lambda s: s.source != "synthetic"),
    ):
        scores: dict[float, list[float]] = {0.1: [], 0.5: []}
        no_seg = 0
        for s in _load(data, "grounding", limit, keep):
            predictor.set_image(s.image)
            p = predictor.ask(
                _question(s), max_new_tokens=max_new_tokens, extra_thresholds=(0.1, 0.5)
            )
            target = s.target_masks[0]
            if not p.masks:
                no_seg += 1
            for t in scores:
                pred = p.masks[0].at_thresholds[t] if p.masks else np.zeros_like(target)
                scores[t].append(dice(pred, target))
        n = len(scores[0.5])
        row[f"mdice_{label}"] = float(np.mean(scores[0.5])) if n else None
        row[f"mdice_{label}@0.1"] = float(np.mean(scores[0.1])) if n else None
        row[f"n_{label}"] = n
        row[f"no_seg_{label}"] = no_seg
    closed = []
    for s in _load(data, "vqa", limit, lambda s: s.answer_type == "closed"):
        predictor.set_image(s.image)
        p = predictor.ask(_question(s), max_new_tokens=max_new_tokens)
        closed.append(closed_accuracy(p.answer, s.turns[0].answer))
    row["closed_acc"] = float(np.mean(closed)) if closed else None
    names = _class_names(data)
    region = []
    for s in _load(data, "region", limit, lambda s: True):
        predictor.set_image(s.image)
        p = predictor.ask(_question(s), regions=s.regions, max_new_tokens=max_new_tokens)
        if s.sample.answer_type == "closed":
            region.append(closed_accuracy(p.answer, s.turns[0].answer))
        else:
            cls = _region_class(s)
            want = names.get(cls) if cls is not None else None
            got = first_structure(p.answer, list(names.values()))
            region.append(float(want is not None and got == want))
    row["region_acc"] = float(np.mean(region)) if region else None
    row["mflops_per_token"] = flops_per_token(predictor, data) / 1e6
    return row


def evaluate_cached(
    checkpoint: Path, data: Path, limit: int, max_new_tokens: int
) -> dict[str, Any]:
    """`evaluate`, kept in CHECKPOINT/ablation-eval.json for the same run and evaluation args."""
    key = {
        "checkpoint": str(checkpoint),
        "data": str(data),
        "step": (read_state(checkpoint) or {}).get("step"),
        "limit": limit,
        "max_new_tokens": max_new_tokens,
    }
    path = checkpoint / "ablation-eval.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return saved["row"]
    row = evaluate(checkpoint, data, limit, max_new_tokens)
    path.write_text(json.dumps({"key": key, "row": row}, indent=2))
    return row


def flops_per_token(predictor: MedPLIBPredictor, data: Path) -> float:
    """FLOPs of one teacher-forced forward over a grounding prompt, divided by its length."""
    from torch.utils.flop_counter import FlopCounterMode

    from medplib.modeling.batching import collate

    samples = _load(data, "grounding", 1, lambda s: True) or _load(data, "vqa", 1, lambda s: True)
    batch = collate([to_model_sample(samples[0])], predictor.tokenizer, predictor.config)
    inputs = batch.model_inputs()
    inputs.pop("labels")
    inputs.pop("target_masks")
    counter = FlopCounterMode(display=False)
    for param in predictor.model.parameters():
        # Frozen instead of torch.no_grad(): the counter's module tracker trips over no-grad views.
        param.requires_grad_(False)
    with counter:
        out = predictor.model(**inputs)
    assert out.attention_mask is not None
    return counter.get_total_flops() / int(out.attention_mask.sum())


def table(rows: dict[str, dict[str, Any]]) -> str:
    def f(v: Any, digits: int = 3) -> str:
        return "–" if v is None else f"{v:.{digits}f}"

    lines = [
        "| variant | mDice synthetic | mDice real | closed acc. | region acc. | MFLOPs/token |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {f(r['mdice_synthetic'])} | {f(r['mdice_real'])} | "
            f"{f(r['closed_acc'])} | {f(r['region_acc'])} | {f(r['mflops_per_token'], 2)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, help="corpus from `medplib data build` (--quick: built)")
    p.add_argument("--out", type=Path, required=True, help="runs, ablation.json, ablation.md")
    p.add_argument("--budget-minutes", type=float, default=40.0, help="training per variant")
    p.add_argument("--seconds-per-step", type=float, default=SECONDS_PER_STEP)
    p.add_argument("--budget-steps", type=int, default=None, help="overrides --budget-minutes")
    p.add_argument("--align-steps", type=int, default=None, help="default: configs/tiny/align")
    p.add_argument(
        "--align",
        type=Path,
        default=None,
        help="a finished align run to start every variant from (default: train one)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-records", type=int, default=None, help="cap per task (quick runs)")
    p.add_argument("--val-records", type=int, default=32)
    p.add_argument("--eval-limit", type=int, default=200, help="holdout items per column")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--quick", action="store_true", help="a few steps on a small corpus")
    p.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=list(VARIANTS),
        help="train and evaluate only these (the table lists them)",
    )
    p.add_argument(
        "--moe-split",
        nargs=3,
        type=float,
        metavar=("VL", "GROUNDING", "MOE"),
        default=None,
        help="fractions of the budget for the moe variant's stages (default: configs/tiny's)",
    )
    p.add_argument(
        "--intermediate",
        action="store_true",
        help="also evaluate the moe variant's vl and grounding experts before the moe stage",
    )
    args = p.parse_args(argv)
    if args.moe_split is not None:
        if min(args.moe_split) <= 0 or abs(sum(args.moe_split) - 1.0) > 1e-6:
            p.error("--moe-split takes three positive fractions that sum to 1")
        split = dict(zip(("vl", "grounding", "moe"), args.moe_split, strict=True))
    else:
        split = recipe_split()
    if args.quick:
        args.budget_minutes = 8 * args.seconds_per_step / 60  # 8 steps
        args.align_steps = args.align_steps or 4
        args.batch_size, args.max_records, args.val_records = 4, 16, 4
        args.eval_limit, args.max_new_tokens = 3, 12
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        if not args.quick:
            p.error("--data is required (or --quick, which builds a small corpus)")
        from medplib.data.build import BuildConfig, build_corpus

        data = args.out / "corpus"
        if not (data / "data_card.json").is_file():
            build_corpus(BuildConfig.small(data, seed=0, realdata=None))
    budget = args.budget_steps or max(1, round(args.budget_minutes * 60 / args.seconds_per_step))
    runs = args.out / "runs"
    t0 = time.perf_counter()

    align_cfg = base_config("align")
    align_steps = args.align_steps or align_cfg["loop"]["steps"]
    align_cfg = shaped(align_cfg, align_steps, args)
    if args.quick:
        align_cfg["model"]["vocab_size"] = 512
        align_cfg["align"]["sam_batch_size"] = args.batch_size
    if args.align is not None:
        state = read_state(args.align) or {}
        if state.get("stage") != "align" or not state.get("complete"):
            p.error(f"--align {args.align} is not a finished align run")
        align = args.align
        align_steps = int(state.get("step", align_steps))
    else:
        align = train_variant("shared", [("align", align_cfg)], data, runs, runs)
    moe_steps = stage_steps(split, budget)
    plans = variant_plans(args, budget, moe_steps)
    finals = {
        name: train_variant(name, plans[name], data, runs, align)
        for name in VARIANTS
        if name in args.variants
    }
    checkpoints = dict(finals)
    if args.intermediate and "moe" in finals:
        # The moe variant's experts before they are joined: what the moe stage adds or loses.
        checkpoints["moe: vl expert"] = runs / "moe" / "vl"
        checkpoints["moe: grounding expert"] = runs / "moe" / "grounding"
    rows = {
        name: evaluate_cached(path, data, args.eval_limit, args.max_new_tokens)
        for name, path in checkpoints.items()
    }
    result = {
        "budget_steps": budget,
        "moe_stage_steps": moe_steps,
        "batch_size": args.batch_size,
        "align_steps": align_steps,
        "quick": args.quick,
        "seconds": round(time.perf_counter() - t0, 1),
        "variants": rows,
    }
    (args.out / "ablation.json").write_text(json.dumps(result, indent=2))
    md = table(rows)
    (args.out / "ablation.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
