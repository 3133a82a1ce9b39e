"""Training configuration: one YAML file per stage, parsed into dataclasses.

A file names its stage and overrides any field of the sections below; every key it uses must
exist (a misspelt key is an error, not a silently ignored setting). Example::

    stage: grounding
    seed: 42
    data: {tasks: {grounding: 1.0}}
    optim: {lr: 1.0e-3}
    loop: {steps: 1200, batch_size: 16}
    losses: {ce_weight: 1.0, bce_weight: 1.0, dice_weight: 5.0, focal_weight: 1.0}
    train_modules: ["language_model.model.layers.*.mlp.*", "seg_head.*", "sam.mask_decoder.*"]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medplib.errors import UserInputError
from medplib.modeling.configuration import (
    INFERENCE_SETTINGS,
    LossConfig,
    MoEConfig,
    check_inference_setting,
)
from medplib.modeling.presets import PRESETS

STAGES = ("align", "vl", "grounding", "moe")
TASKS = ("vqa", "region", "grounding")
SEVEN_B_PRESETS = ("medplib-7b", "medplib-7b-2e")


@dataclass
class ModelSection:
    """What model the stage builds or names."""

    # align builds this architecture from scratch; later stages read it from their inputs.
    preset: str = "tiny-dense"
    # Name written into the output checkpoint's config ("" → "<preset>-<stage>").
    name: str = ""
    # align: learned base vocabulary of the tokenizer; the 267 MedPLIB tokens come on top.
    vocab_size: int = 1024
    # align: SAM-Med2D image encoder's patch size in px (None keeps the preset's). The mask
    # decoder upsamples its embedding grid 4x, so at 128 px patch 16 gives 32 x 32 masks and
    # patch 8 gives 64 x 64: thin or many small structures (nuclei) need the finer grid.
    sam_patch_size: int | None = None
    # moe: MoEConfig fields for the assembled model (official: 2 experts, top-1, factor 1.5).
    moe: dict[str, Any] = field(default_factory=dict)
    # Inference settings written into the output checkpoint's config; training ignores them.
    # None keeps the input checkpoint's. The mask binarisation threshold on sigmoid(logits)
    # (MedPLIBConfig.mask_threshold, 0.1 in the official model):
    mask_threshold: float | None = None
    # and the mirror test-time augmentation gate (MedPLIBConfig.flip_tta_min_agreement).
    flip_tta_min_agreement: float | None = None
    # and the margin under which left/right answers are checked on the mirrored image
    # (MedPLIBConfig.side_tta_max_margin).
    side_tta_max_margin: float | None = None
    # and the grounding check of presence answers (MedPLIBConfig.presence_check_max_margin and
    # presence_check_min_mask_score).
    presence_check_max_margin: float | None = None
    presence_check_min_mask_score: float | None = None
    # and the grounding check of answers about a marked region (MedPLIBConfig.
    # region_check_max_margin and region_check_min_coverage).
    region_check_max_margin: float | None = None
    region_check_min_coverage: float | None = None


@dataclass
class DataSection:
    """Which MeCoVQA records feed the stage."""

    # task → how many times each record is seen per epoch (0.5 = a random half of them).
    tasks: dict[str, float] = field(default_factory=lambda: {"vqa": 1.0, "region": 1.0})
    # Question kind ("side", "presence", … as `medplib data build` writes them) → factor on
    # its task's weight; "*" stands for every kind not listed (default 1, 0 leaves it out).
    # Lets a run drill the kinds the model gets wrong without new data files.
    question_kinds: dict[str, float] = field(default_factory=dict)
    # Record source ("synthetic", "busi-mini", …) → factor, multiplied with the kind's; "*"
    # as above. Real sources with a few dozen records are otherwise seen a few times a run.
    sources: dict[str, float] = field(default_factory=dict)
    split: str = "train"  # only train may be trained on; val / holdout are for measuring
    val_split: str = "val"  # teacher-forced validation during training
    max_records: int | None = None  # cap per task, for quick runs and tests
    val_records: int = 32  # per task; a fixed subset so curves are comparable across steps
    # Expanded sequence limit; None = the language model's context. Longer samples are skipped.
    max_length: int | None = None
    num_workers: int = 0  # DataLoader processes for image decoding and collation


@dataclass
class OptimSection:
    """AdamW and the learning-rate schedule (official: β 0.9/0.95, no weight decay, clip 1)."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    # Linear warm-up over this fraction of the steps (official: 1 % of one epoch).
    warmup_fraction: float = 0.01
    # Linear decay to min_lr over the last fraction of the steps; 1.0 = decay right after
    # warm-up (official WarmupDecayLR). Small models gain most in a short final decay.
    decay_fraction: float = 1.0
    min_lr_ratio: float = 0.0  # final lr as a fraction of lr


@dataclass
class LoopSection:
    """Length of the run, batching, precision and bookkeeping."""

    steps: int | None = None  # optimizer steps; exactly one of steps / epochs
    epochs: float | None = None  # passes over the (task-weighted) training records
    batch_size: int = 16  # per device, per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    checkpoint_every: int = (
        200  # optimizer steps between resumable checkpoints; 0 = only at the end
    )
    keep_checkpoints: int = 2  # older resumable checkpoints are deleted
    log_every: int = 10  # optimizer steps between metrics lines
    eval_every: int = 0  # optimizer steps between validations; 0 = only at the end
    # "auto": bf16 on GPUs that support it, fp32 on CPU; or "no" / "bf16" / "fp16".
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False  # trades compute for memory (the 7B recipe uses it)


@dataclass
class LoraSection:
    """LoRA through `peft` (the official recipe); None in a config means full fine-tuning."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    # Linear-layer names inside the language model (never CLIP, SAM or the projector).
    target_modules: list[str] = field(default_factory=lambda: ["gate_proj", "up_proj", "down_proj"])


@dataclass
class AlignSection:
    """align only: objectives that stand in for pretrained weights at small scale."""

    # Weight of the promptable-segmentation loss that pretrains SAM-Med2D (box / point
    # prompts from the grounding masks, BCE + Dice).
    sam_weight: float = 1.0
    sam_batch_size: int = 16  # grounding masks per micro-batch for that loss
    # Cross-entropy on every text token (system prompt, question and answer), i.e. language
    # model pretraining, not only on the answers.
    lm_full_text: bool = True


@dataclass
class PatchLabelSection:
    """Auxiliary supervision of a randomly initialised CLIP (`medplib.train.patch_labels`)."""

    # Weight of the patch-label BCE in the stage loss; 0 = off. Only useful in stages that
    # train the vision tower (align, vl) and only where no pretrained CLIP is loaded.
    weight: float = 0.0
    # Also predict each patch's grid row and column, so the visual tokens keep their place.
    position: bool = True


@dataclass
class AttentionLabelSection:
    """Supervision of one LM head's attention by the named structure (`medplib.train.attention_labels`)."""

    # Weight of the attention-label cross-entropy in the stage loss; 0 = off. Needs a corpus
    # with masks (`medplib data build`) and a stage that trains the language model.
    weight: float = 0.0
    # Which decoder layer and head: a middle layer leaves the layers before it to bring the
    # structure's name to the answer position and the layers after it to turn what the head
    # reads into the answer.
    layer: int = 2
    head: int = 0


@dataclass
class AugmentSection:
    """Random changes to training images that keep every answer true (`medplib.train.augment`).

    Off by default. Val records are never changed. Mirroring and zooming move structures, so
    they cannot go with `patch_labels` or `attention_labels`, whose targets are precomputed
    per image file.
    """

    probability: float = 0.0  # share of the chosen records changed at all; 0 = off
    # Record sources changed ("*" = all). Synthetic scenes already vary in how they are drawn;
    # real sources with a few dozen images are the ones a model memorises.
    sources: list[str] = field(default_factory=lambda: ["*"])
    # Gamma drawn log-uniformly in [1/gamma, gamma]: exposure and windows differ by scanner.
    gamma: float = 1.0
    # Contrast factor drawn in [1 - contrast, 1 + contrast] about the image mean.
    contrast: float = 0.0
    # Chance of inverting a greyscale image: CT and MR show the same tissue at opposite ends.
    invert_grey: float = 0.0
    # Chance of a left-right mirror; records whose text says "left" or "right" never mirror.
    hflip: float = 0.0
    # Largest shrink about the centre (0.3: scale drawn in [0.7, 1]), half of changed records.
    zoom_out: float = 0.0

    @property
    def moves_pixels(self) -> bool:
        return self.hflip > 0 or self.zoom_out > 0


@dataclass
class TrainConfig:
    """One training stage."""

    stage: str
    seed: int = 42  # model init, data order and dropout all derive from it
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loop: LoopSection = field(default_factory=LoopSection)
    losses: LossConfig = field(default_factory=LossConfig)
    lora: LoraSection | None = None
    # Glob patterns over parameter names (`*` crosses dots) of the fully trained weights;
    # everything else is frozen. With LoRA, LoRA-targeted layers train only their adapters.
    train_modules: list[str] = field(default_factory=list)
    align: AlignSection = field(default_factory=AlignSection)
    patch_labels: PatchLabelSection = field(default_factory=PatchLabelSection)
    attention_labels: AttentionLabelSection = field(default_factory=AttentionLabelSection)
    augment: AugmentSection = field(default_factory=AugmentSection)

    @property
    def is_7b(self) -> bool:
        return self.model.preset in SEVEN_B_PRESETS

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def fingerprint(self) -> str:
        """Hash of the settings that shape the run (a resumed run must match it).

        `data.num_workers` is left out: it changes speed, never the batches. `patch_labels`,
        `attention_labels`, `augment`, `data.question_kinds` and `data.sources` are left out
        while off, so runs made before them keep their fingerprint.
        """
        shaping = self.to_dict()
        shaping["data"].pop("num_workers")
        if not self.patch_labels.weight:
            shaping.pop("patch_labels")
        if not self.attention_labels.weight:
            shaping.pop("attention_labels")
        if not self.augment.probability:
            shaping.pop("augment")
        if not self.data.question_kinds:
            shaping["data"].pop("question_kinds")
        if not self.data.sources:
            shaping["data"].pop("sources")
        text = json.dumps(shaping, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def moe_config(self) -> MoEConfig:
        try:
            return MoEConfig.from_dict({"num_experts": 2, **self.model.moe})
        except (TypeError, ValueError) as exc:
            raise UserInputError(f"model.moe is invalid: {exc}.") from None

    def validate(self) -> None:
        """Range checks that YAML types alone cannot express; raises UserInputError."""
        c = self
        if c.stage not in STAGES:
            raise UserInputError(f"stage must be one of {list(STAGES)}, got {c.stage!r}.")
        if c.model.preset not in PRESETS:
            raise UserInputError(
                f"model.preset {c.model.preset!r} is unknown; choose one of {sorted(PRESETS)}."
            )
        if c.model.sam_patch_size is not None and c.model.sam_patch_size < 1:
            raise UserInputError("model.sam_patch_size must be a positive number of pixels.")
        try:  # unset (None) keeps the input checkpoint's value
            for name in INFERENCE_SETTINGS:
                if getattr(c.model, name) is not None:
                    check_inference_setting(name, getattr(c.model, name))
        except ValueError as exc:
            raise UserInputError(f"model.{exc}.") from None
        if c.model.vocab_size < 259:
            raise UserInputError("model.vocab_size must be at least 259 (256 bytes + 3 specials).")
        unknown = sorted(set(c.data.tasks) - set(TASKS))
        if unknown or not c.data.tasks:
            raise UserInputError(
                f"data.tasks must map some of {list(TASKS)} to weights, got {sorted(c.data.tasks)}."
            )
        if any(w <= 0 for w in c.data.tasks.values()):
            raise UserInputError("every weight in data.tasks must be positive.")
        if any(w < 0 for w in c.data.question_kinds.values()):
            raise UserInputError("every weight in data.question_kinds must be 0 or more.")
        if any(w < 0 for w in c.data.sources.values()):
            raise UserInputError("every weight in data.sources must be 0 or more.")
        if c.data.split != "train":
            raise UserInputError(
                f"data.split is {c.data.split!r}; only the train split may be trained on."
            )
        if (c.loop.steps is None) == (c.loop.epochs is None):
            raise UserInputError("set exactly one of loop.steps and loop.epochs.")
        if (c.loop.steps is not None and c.loop.steps < 1) or (
            c.loop.epochs is not None and c.loop.epochs <= 0
        ):
            raise UserInputError("loop.steps / loop.epochs must be positive.")
        for name in ("batch_size", "grad_accum", "log_every", "keep_checkpoints"):
            if getattr(c.loop, name) < 1:
                raise UserInputError(f"loop.{name} must be at least 1.")
        if c.loop.checkpoint_every < 0 or c.loop.eval_every < 0:
            raise UserInputError("loop.checkpoint_every and loop.eval_every must be 0 or more.")
        if c.loop.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise UserInputError("loop.mixed_precision must be auto, no, bf16 or fp16.")
        o = c.optim
        if o.lr <= 0 or not 0 <= o.warmup_fraction < 1 or not 0 <= o.decay_fraction <= 1:
            raise UserInputError(
                "optim.lr must be positive and optim.warmup_fraction / decay_fraction in [0, 1]."
            )
        if o.warmup_fraction + o.decay_fraction > 1 + 1e-9 and o.decay_fraction < 1:
            raise UserInputError("optim.warmup_fraction + optim.decay_fraction exceed 1.")
        if not c.train_modules and c.lora is None:
            raise UserInputError("train_modules is empty and LoRA is off: nothing would train.")
        if c.lora is not None and (c.lora.r < 1 or not c.lora.target_modules):
            raise UserInputError("lora.r must be at least 1 and lora.target_modules non-empty.")
        if c.stage == "moe":
            c.moe_config()
        if c.patch_labels.weight < 0:
            raise UserInputError("patch_labels.weight must be 0 (off) or positive.")
        g = c.augment
        if not 0 <= g.probability <= 1 or not 0 <= g.invert_grey <= 1 or not 0 <= g.hflip <= 1:
            raise UserInputError(
                "augment.probability, augment.invert_grey and augment.hflip are chances in [0, 1]."
            )
        if g.gamma < 1 or not 0 <= g.contrast < 1 or not 0 <= g.zoom_out < 1:
            raise UserInputError(
                "augment.gamma must be 1 or more, augment.contrast and augment.zoom_out in [0, 1)."
            )
        if not g.sources:
            raise UserInputError('augment.sources must name some sources, or ["*"] for all.')
        if (
            g.probability
            and g.moves_pixels
            and (c.patch_labels.weight or c.attention_labels.weight)
        ):
            raise UserInputError(
                "augment.hflip and augment.zoom_out move structures, but patch_labels and "
                "attention_labels are computed from the unchanged images; turn one side off."
            )
        a = c.attention_labels
        if a.weight < 0 or a.layer < 0 or a.head < 0:
            raise UserInputError(
                "attention_labels.weight must be 0 (off) or positive, and its layer and head 0 or more."
            )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_NESTED: dict[str, type] = {
    "model": ModelSection,
    "data": DataSection,
    "optim": OptimSection,
    "loop": LoopSection,
    "lora": LoraSection,
    "align": AlignSection,
    "patch_labels": PatchLabelSection,
    "attention_labels": AttentionLabelSection,
    "augment": AugmentSection,
}


def _check_type(where: str, value: Any, annotation: Any) -> Any:
    """Coerce YAML scalars to the field type (int → float); raise on a clear mismatch."""
    tp = typing.get_origin(annotation) or annotation
    args = typing.get_args(annotation)
    if tp in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(where, value, inner[0])
    ok = True
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif annotation is bool:
        ok = isinstance(value, bool)
    elif annotation is str:
        ok = isinstance(value, str)
    elif tp is dict:
        ok = isinstance(value, dict)
        if ok and args and args[1] is float:
            ok = all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()
            )
            value = {k: float(v) for k, v in value.items()} if ok else value
    elif tp in (list, tuple):
        ok = isinstance(value, (list, tuple))
        if ok and tp is tuple:
            value = tuple(float(v) for v in value) if args and args[0] is float else tuple(value)
        elif ok:
            value = list(value)
    if not ok:
        raise UserInputError(f"{where} has the wrong type ({type(value).__name__}: {value!r}).")
    return value


def _section(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise UserInputError(f"{where} must be a mapping of keys to values.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise UserInputError(
            f"unknown key {where + '.' if where else ''}{unknown[0]} in the config; "
            f"valid keys are {names}."
        )
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key in _NESTED and cls is TrainConfig:
            # Only a section typed optional (lora) may be null; the others are always read.
            optional = type(None) in typing.get_args(hints[key])
            if value is None and optional:
                kwargs[key] = None
            else:
                kwargs[key] = _section(_NESTED[key], value, path)
        elif key == "losses" and cls is TrainConfig:
            kwargs[key] = _losses(value, path)
        else:
            kwargs[key] = _check_type(path, value, hints[key])
    return cls(**kwargs)


def _losses(data: Any, where: str) -> LossConfig:
    if not isinstance(data, dict):
        raise UserInputError(f"{where} must be a mapping of loss weights.")
    names = [f.name for f in dataclasses.fields(LossConfig)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise UserInputError(
            f"unknown key {where}.{unknown[0]} in the config; valid keys are {names}."
        )
    hints = typing.get_type_hints(LossConfig)
    losses = LossConfig(**{k: _check_type(f"{where}.{k}", v, hints[k]) for k, v in data.items()})
    try:
        losses.validate()
    except ValueError as exc:
        raise UserInputError(f"{where}.{exc}.") from None
    return losses


def config_from_dict(data: Any, source: str = "config") -> TrainConfig:
    """Build and validate a TrainConfig; every problem is a one-sentence UserInputError."""
    if not isinstance(data, dict) or "stage" not in data:
        raise UserInputError(f"{source} must be a YAML mapping with a 'stage' key.")
    try:
        config = _section(TrainConfig, data, "")
    except UserInputError as exc:
        raise UserInputError(f"{source}: {exc}") from None
    config.validate()
    return config


def load_config(path: str | Path) -> TrainConfig:
    """Read a stage's YAML file (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise UserInputError(f"config file {p} does not exist; pass one of the files in configs/.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise UserInputError(f"{p} is not valid YAML{where}; fix its syntax.") from None
    return config_from_dict(data, source=str(p))


def dump_config(config: TrainConfig) -> str:
    """The resolved config as YAML (written next to every run)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
