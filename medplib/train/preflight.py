"""Check every input of a stage before anything is written.

`plan_stage` returns a `StagePlan` or raises `UserInputError` with one sentence; the output
folder is never created here, so a run refused for bad input leaves no trace.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from medplib.checkpoint import CONFIG_NAME, weight_files
from medplib.data.mecovqa import MeCoVQADataset
from medplib.errors import UserInputError
from medplib.modeling.configuration import MedPLIBConfig
from medplib.modeling.presets import build_config
from medplib.train.config import TrainConfig
from medplib.train.data import (
    RecordOrder,
    check_corpus,
    combined_multipliers,
    kind_multipliers,
    load_task_datasets,
    source_multipliers,
)
from medplib.train.patch_labels import PatchLabelIndex

STATE_NAME = "trainer_state.json"
CHECKPOINTS_DIR = "checkpoints"
# The stage whose output each stage starts from (None: built from the preset).
PREREQUISITE = {"align": None, "vl": "align", "grounding": "vl"}


@dataclass
class StagePlan:
    """Everything a stage needs, validated."""

    config: TrainConfig
    data_dir: Path
    out_dir: Path
    init_dir: Path | None = None
    experts: tuple[Path, Path] | None = None
    export_dir: Path | None = None
    resume_from: Path | None = None  # resumable checkpoint folder to continue from
    already_complete: bool = False  # --resume on a finished run: nothing to do
    skip_message: str | None = None  # the stage does not apply (7B align)
    train_sets: dict[str, MeCoVQADataset] = field(default_factory=dict)
    sam_sets: dict[str, MeCoVQADataset] = field(default_factory=dict)
    val_sets: dict[str, MeCoVQADataset] = field(default_factory=dict)
    patch_labels: PatchLabelIndex | None = None  # patch_labels.weight > 0
    attention_labels: PatchLabelIndex | None = None  # attention_labels.weight > 0
    # Order of the training records (task weights × data.question_kinds × data.sources); built here so that
    # weights leaving nothing to train on are refused before anything is written.
    order: RecordOrder | None = None
    # Model config of --init (or the VL expert for moe); None for align, built from the preset.
    start_config: MedPLIBConfig | None = None


def read_state(out_dir: Path) -> dict | None:
    path = out_dir / STATE_NAME
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return state if isinstance(state, dict) else None


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete resumable checkpoint (`checkpoints/step-NNNNNN` with its state)."""
    root = out_dir / CHECKPOINTS_DIR
    if not root.is_dir():
        return None
    done = [
        p
        for p in root.glob("step-*")
        if p.is_dir() and not p.name.endswith(".tmp") and (p / STATE_NAME).is_file()
    ]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def _finished_model(
    path: Path,
    flag: str,
    want_stage: str | None,
    also: str | None = None,
    *,
    moe: bool = False,
) -> MedPLIBConfig:
    """Config of the finished checkpoint at `path`, or a UserInputError saying why not.

    `want_stage` is the stage whose output is expected; `also` a second one that is accepted.
    The checkpoint must be dense, or with `moe` a mixture of experts.
    """
    run = f"the {want_stage} stage" if want_stage else "the previous stage"
    if not path.is_dir():
        raise UserInputError(f"{flag} {path} does not exist; run {run} first and pass its --out.")
    state = read_state(path)
    if state is not None and not state.get("complete"):
        raise UserInputError(
            f"{flag} {path} holds an unfinished {state.get('stage', '?')} run; "
            "finish it with --resume first."
        )
    if not (path / CONFIG_NAME).is_file() or not weight_files(path):
        raise UserInputError(
            f"{flag} {path} is not a MedPLIB checkpoint (no {CONFIG_NAME} and weights); "
            f"pass the --out folder of {run}."
        )
    if (
        state is not None
        and want_stage is not None
        and state.get("stage") not in (want_stage, also)
    ):
        alternative = f" or continues a finished {also} run" if also else ""
        raise UserInputError(
            f"{flag} {path} is the output of the {state.get('stage')} stage, "
            f"but this stage starts from {run}{alternative}."
        )
    try:
        config = MedPLIBConfig.from_dict(json.loads((path / CONFIG_NAME).read_text()))
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"{flag} {path} has an unreadable {CONFIG_NAME}: {exc}.") from None
    if config.moe.is_moe and not moe:
        raise UserInputError(
            f"{flag} {path} is already a mixture-of-experts model; this stage needs a dense one "
            "(continue a mixture of experts with --stage moe --init DIR)."
        )
    if moe and not config.moe.is_moe:
        raise UserInputError(
            f"{flag} {path} is a dense model, not a mixture of experts; assemble one with "
            "--experts VL_DIR GROUNDING_DIR instead."
        )
    return config


# The mixture's shape: weights are stacked per expert and layer, so a config cannot change it.
_MOE_SHAPE = ("num_experts", "top_k", "layers", "router_dtype")


def _check_moe_init(path: Path, config: TrainConfig) -> MedPLIBConfig:
    """The config of the MoE checkpoint `--init` continues; model.moe may not reshape it."""
    start = _finished_model(path, "--init", "moe", moe=True)
    have = start.moe.to_dict()
    for key in _MOE_SHAPE:
        if key in config.model.moe and config.model.moe[key] != have[key]:
            raise UserInputError(
                f"model.moe.{key} is {config.model.moe[key]!r} but the --init checkpoint {path} "
                f"has {have[key]!r}; drop it from the config or assemble anew with --experts."
            )
    return start


def _check_experts(vl: Path, grounding: Path) -> MedPLIBConfig:
    """The VL expert's config, once both experts are finished and built alike."""
    vl_config = _finished_model(vl, "--experts (VL)", "vl")
    vl_cfg = vl_config.to_dict()
    gr_cfg = _finished_model(grounding, "--experts (GROUNDING)", "grounding").to_dict()
    for key in ("vision", "projector", "region", "language", "seg_head", "sam", "seg_token_id"):
        if vl_cfg[key] != gr_cfg[key]:
            raise UserInputError(
                f"the VL and grounding checkpoints differ in {key!r}; "
                "train the grounding expert from the VL checkpoint (--init)."
            )
    return vl_config


def _check_out(plan: StagePlan, resume: bool) -> None:
    out, stage = plan.out_dir, plan.config.stage
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} exists and is not a folder; choose another --out.")
    if not out.is_dir() or not any(out.iterdir()):
        return
    state = read_state(out)
    if state is None:
        raise UserInputError(
            f"--out {out} is not empty and holds no training run; choose a new or empty folder."
        )
    if state.get("stage") != stage:
        raise UserInputError(
            f"--out {out} holds the output of the {state.get('stage')} stage, not {stage}; "
            "choose another --out."
        )
    if not resume:
        what = "finished" if state.get("complete") else "unfinished"
        raise UserInputError(
            f"--out {out} already holds a {what} {stage} run; pass --resume to continue it "
            "or choose a new --out."
        )
    if state.get("config_fingerprint") != plan.config.fingerprint():
        raise UserInputError(
            f"the config differs from the one {out} was started with; resume with the same "
            "config or start a new --out."
        )
    if state.get("complete"):
        plan.already_complete = True
        return
    plan.resume_from = latest_checkpoint(out)


def _check_attention_head(plan: StagePlan) -> None:
    """attention_labels.layer / head must exist in the language model the stage trains."""
    model_config = plan.start_config or build_config(plan.config.model.preset)
    llama = model_config.language.llama_config()
    layers, heads = llama.num_hidden_layers, llama.num_attention_heads
    a = plan.config.attention_labels
    if a.layer >= layers or a.head >= heads:
        raise UserInputError(
            f"attention_labels names layer {a.layer}, head {a.head}, but the language model "
            f"has {layers} layers of {heads} heads (both count from 0)."
        )


def plan_stage(
    config: TrainConfig,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    init_dir: str | Path | None = None,
    experts: tuple[str | Path, str | Path] | None = None,
    resume: bool = False,
    export_dir: str | Path | None = None,
) -> StagePlan:
    """Validate config, prerequisites, data and output folder (writes nothing)."""
    config.validate()
    stage = config.stage
    plan = StagePlan(config=config, data_dir=Path(data_dir), out_dir=Path(out_dir))
    plan.export_dir = Path(export_dir) if export_dir is not None else None
    if stage == "align" and config.is_7b:
        plan.skip_message = (
            f"align is skipped for the {config.model.preset} preset: its CLIP ViT-L/336, "
            "LLaVA-v1.5-7B and SAM-Med2D-B weights are published (convert them with "
            "`medplib convert`); start with --stage vl --init CONVERTED_DIR."
        )
        return plan
    if stage != "moe" and experts is not None:
        raise UserInputError(f"--experts is only for --stage moe, not {stage}.")
    if stage == "align" and init_dir is not None:
        raise UserInputError("align builds the model from the preset; drop --init.")
    if stage in ("vl", "grounding"):
        if init_dir is None:
            raise UserInputError(
                f"--stage {stage} needs --init DIR, the --out folder of the "
                f"{PREREQUISITE[stage]} stage."
            )
        plan.init_dir = Path(init_dir)
        # Or a finished run of the same stage, continued with other data weights
        # (configs/tiny/vl-readout.yaml continues vl).
        plan.start_config = _finished_model(
            plan.init_dir, "--init", PREREQUISITE[stage], also=stage
        )
    if stage == "moe":
        if (init_dir is None) == (experts is None):
            raise UserInputError(
                "--stage moe needs exactly one of --experts VL_DIR GROUNDING_DIR (the --out "
                "folders of the vl and grounding stages, assembled into a new mixture) and "
                "--init MOE_DIR (a mixture-of-experts checkpoint to fine-tune further)."
            )
        if experts is not None:
            plan.experts = (Path(experts[0]), Path(experts[1]))
            plan.start_config = _check_experts(*plan.experts)
        else:
            assert init_dir is not None
            plan.init_dir = Path(init_dir)
            plan.start_config = _check_moe_init(plan.init_dir, config)

    tasks = list(config.data.tasks)
    sam_tasks = ["grounding"] if stage == "align" and config.align.sam_weight > 0 else []
    check_corpus(plan.data_dir, sorted(set(tasks) | set(sam_tasks)), config.data.split, stage)
    plan.train_sets = load_task_datasets(
        plan.data_dir, tasks, config.data.split, config.data.max_records
    )
    plan.order = RecordOrder(
        {t: len(d) for t, d in plan.train_sets.items()},
        config.data.tasks,
        config.seed,
        combined_multipliers(
            kind_multipliers(plan.train_sets, config.data.question_kinds),
            source_multipliers(plan.train_sets, config.data.sources),
        ),
    )
    if sam_tasks:
        plan.sam_sets = load_task_datasets(
            plan.data_dir, sam_tasks, config.data.split, config.data.max_records
        )
    if config.patch_labels.weight > 0:
        plan.patch_labels = PatchLabelIndex.from_corpus(
            plan.data_dir, position=config.patch_labels.position
        )
    if config.attention_labels.weight > 0:
        _check_attention_head(plan)
        plan.attention_labels = plan.patch_labels or PatchLabelIndex.from_corpus(
            plan.data_dir, position=False, setting="attention_labels"
        )
    for task in tasks if config.data.val_records > 0 else []:
        try:  # validation is optional: a corpus without (valid) val records still trains
            plan.val_sets.update(
                load_task_datasets(
                    plan.data_dir, [task], config.data.val_split, config.data.val_records
                )
            )
        except UserInputError:
            continue

    _check_out(plan, resume)
    if plan.export_dir is not None:
        e = plan.export_dir
        if e.exists() and (
            not e.is_dir() or (any(e.iterdir()) and not (e / CONFIG_NAME).is_file())
        ):
            raise UserInputError(
                f"--export {e} exists and is not a MedPLIB checkpoint folder; choose another."
            )
    return plan
