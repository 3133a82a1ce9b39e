"""Convert the published MedPLIB checkpoint (HF `MedPLIBForCausalLM` layout) to this project's layout.

Inputs: the released checkpoint directory (``*.safetensors`` and/or ``pytorch_model*.bin``
shards, ``config.json``, LLaMA tokenizer files), optionally a CLIP checkpoint directory and
``sam-med2d_b.pth``. The separate CLIP and SAM files fill in what the checkpoint lacks; where
both hold a tensor the checkpoint wins, as in the official loader (which builds CLIP and SAM
from those files, then loads the checkpoint on top).

The architecture comes from a preset (default ``medplib-7b-2e``) refined by the official
``config.json``, the CLIP ``config.json`` and the tensor shapes themselves; every tensor is then
checked against the model it will load into. The output is what `medplib.checkpoint.
save_pretrained` writes (config, sharded safetensors with the weights fingerprint, tokenizer)
plus ``conversion.json`` describing where each group of weights came from. A sentencepiece
LLaMA tokenizer is rebuilt with the checkpoint's own class and flags so that it encodes as the
official slow tokenizer does (`medplib.convert.tokenizer`); ``conversion.json`` records how.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import PreTrainedTokenizerBase

from medplib.checkpoint import (
    CONFIG_NAME,
    DEFAULT_MAX_SHARD_BYTES,
    FINGERPRINT_KEY,
    INDEX_NAME,
    WEIGHTS_NAME,
    checkpoint_id,
    weights_fingerprint,
)
from medplib.convert.keymap import (
    CLIP_TO_OURS,
    IGNORED_CLIP,
    IGNORED_OFFICIAL,
    IGNORED_SAM,
    OFFICIAL_TO_OURS,
    SAM_TO_OURS,
    PrefixTable,
    component_of,
    is_ignored,
    rename,
)
from medplib.convert.sources import TensorRef, directory_refs, safetensors_refs, torch_file_refs
from medplib.convert.tokenizer import load_checkpoint_tokenizer
from medplib.errors import UserInputError
from medplib.modeling.configuration import MedPLIBConfig, SegHeadConfig, standard_rope
from medplib.modeling.medplib import MedPLIBForCausalLM
from medplib.modeling.presets import build_config
from medplib.tokenization import SpecialTokenIds

REPORT_NAME = "conversion.json"
# LlamaConfig fields read from the official config.json (shapes override the size fields).
LLAMA_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_parameters",
    "rope_theta",
    "rope_scaling",
    "hidden_act",
    "tie_word_embeddings",
    "attention_bias",
    "initializer_range",
)
# Official `config.moe` entries that have a counterpart in MoEConfig.
MOE_FIELDS = {
    "capacity_factor": "capacity_factor",
    "eval_capacity_factor": "eval_capacity_factor",
    "min_capacity": "min_capacity",
    "router_aux_loss_coef": "router_aux_loss_coef",
}
_ROUTER_SUFFIX = ".mlp.router.weight"
_MISSING_HINTS = {
    "CLIP vision tower": "pass --clip DIR (e.g. clip-vit-large-patch14-336)",
    "SAM-Med2D": "pass --sam sam-med2d_b.pth",
}


@dataclass
class ConversionReport:
    """What a conversion did; also written to ``conversion.json`` in the output."""

    source: str
    output: str
    checkpoint_id: str
    num_tensors: int
    total_bytes: int
    num_shards: int
    from_checkpoint: int  # tensors taken from SRC
    from_clip: int  # tensors taken from --clip
    from_sam: int  # tensors taken from --sam
    overridden_by_checkpoint: int  # --clip/--sam tensors not used because SRC has them
    ignored: list[str] = field(default_factory=list)  # source keys dropped (recomputed buffers)
    notes: list[str] = field(default_factory=list)
    # The source tokenizer's class and flags and how it was loaded (medplib.convert.tokenizer).
    tokenizer: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------- mapping
@dataclass
class _Plan:
    refs: dict[str, TensorRef] = field(default_factory=dict)  # our key → source tensor
    origin: dict[str, str] = field(default_factory=dict)  # our key → "checkpoint" | "clip" | "sam"
    ignored: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    overridden: int = 0

    def add(
        self,
        refs: Mapping[str, TensorRef],
        table: PrefixTable,
        ignore: tuple[str, ...],
        origin: str,
    ) -> None:
        """Add a source's tensors under our names; sources must be added highest priority first."""
        for key, ref in refs.items():
            if is_ignored(key, ignore):
                self.ignored.append(f"{ref.file.name}:{key}")
                continue
            ours = rename(key, table)
            if ours is None:
                self.unknown.append(f"{ref.file.name}:{key}")
                continue
            if ours in self.refs:
                self.overridden += 1  # an earlier (higher-priority) source already has it
                continue
            self.refs[ours] = ref
            self.origin[ours] = origin


def _unknown_message(unknown: list[str], what: str) -> str:
    shown = ", ".join(unknown[:8]) + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else "")
    hint = (
        " They look like unmerged LoRA adapters; merge LoRA into the base weights first."
        if any("lora_" in k for k in unknown)
        else " Is this a MedPLIB checkpoint in the released layout?"
    )
    return f"{what} has {len(unknown)} weights this converter does not know: {shown}.{hint}"


def _missing_message(missing: list[str]) -> str:
    groups: dict[str, list[str]] = {}
    for key in missing:
        groups.setdefault(component_of(key), []).append(key)
    parts = []
    for name, keys in groups.items():
        hint = _MISSING_HINTS.get(name, "the source checkpoint is incomplete")
        parts.append(f"{name}: {len(keys)} weights, e.g. {keys[0]} ({hint})")
    return "The converted checkpoint would lack weights — " + "; ".join(parts) + "."


# ---------------------------------------------------------------------------------- config
def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise UserInputError(f"{path} is not valid JSON ({exc}).") from None
    return data if isinstance(data, dict) else None


def _layer_ids(keys: set[str], pattern: str) -> set[int]:
    rx = re.compile(pattern)
    return {int(m.group(1)) for k in keys if (m := rx.match(k))}


def build_converted_config(
    shapes: Mapping[str, tuple[int, ...]],
    tokenizer: PreTrainedTokenizerBase,
    *,
    preset: str,
    official: dict[str, Any] | None,
    clip: dict[str, Any] | None,
    name: str,
) -> tuple[MedPLIBConfig, list[str]]:
    """Our config for weights of the given (our-layout) shapes; returns (config, notes).

    Sizes come from the shapes, the rest from the official config.json, the CLIP config.json
    and, for what neither states (e.g. SAM-Med2D), the preset.
    """
    notes: list[str] = []
    official = official or {}
    cfg = build_config(preset)
    keys = set(shapes)

    def shape(key: str) -> tuple[int, ...]:
        if key not in shapes:
            part = component_of(key)
            hint = _MISSING_HINTS.get(part, "the source checkpoint is incomplete")
            raise UserInputError(f"The weights lack the {part} (no {key}); {hint}.")
        return shapes[key]

    # LLaMA
    llama = dict(cfg.language.llama)
    for f in LLAMA_FIELDS:
        if official.get(f) is not None:
            llama[f] = official[f]
    vocab, hidden = shape("language_model.model.embed_tokens.weight")
    layers = _layer_ids(keys, r"language_model\.model\.layers\.(\d+)\.")
    num_layers = max(layers) + 1 if layers else 0
    experts = _layer_ids(keys, r"language_model\.model\.layers\.\d+\.mlp\.experts\.(\d+)\.")
    moe_layers = sorted(_layer_ids(keys, r"language_model\.model\.layers\.(\d+)\.mlp\.router\."))
    num_experts = max(experts) + 1 if experts else 1
    ffn_key = (
        "language_model.model.layers.0.mlp.experts.0.gate_proj.weight"
        if 0 in moe_layers
        else "language_model.model.layers.0.mlp.gate_proj.weight"
    )
    derived = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": num_layers,
        "intermediate_size": shape(ffn_key)[0],
    }
    for f, value in derived.items():
        if f in official and official[f] != value:
            notes.append(
                f"config.json says {f}={official[f]} but the weights have {value}; used {value}."
            )
        llama[f] = value
    heads = int(llama["num_attention_heads"])
    if hidden % heads:
        raise UserInputError(
            f"hidden size {hidden} is not divisible by num_attention_heads={heads}; "
            "the official config.json or --preset does not match these weights."
        )
    kv_rows = shape("language_model.model.layers.0.self_attn.k_proj.weight")[0]
    llama["num_key_value_heads"] = kv_rows // (hidden // heads)
    cfg.language.llama = standard_rope(llama)

    # MoE
    cfg.moe.num_experts = num_experts
    if num_experts > 1:
        cfg.moe.layers = "all" if moe_layers == list(range(num_layers)) else moe_layers
    moe_official = official.get("moe") if isinstance(official.get("moe"), dict) else {}
    assert isinstance(moe_official, dict)
    top_k = moe_official.get("top_k_experts")
    if num_experts > 1 and top_k not in (None, 1):
        raise UserInputError(
            f"config.json routes each token to {top_k} experts; only top-1 MoE is supported."
        )
    for theirs, ours in MOE_FIELDS.items():
        if moe_official.get(theirs) is not None:
            setattr(cfg.moe, ours, type(getattr(cfg.moe, ours))(moe_official[theirs]))

    # CLIP
    clip_dict = dict(cfg.vision.clip)
    if clip:
        source = clip.get("vision_config") if isinstance(clip.get("vision_config"), dict) else clip
        assert isinstance(source, dict)
        for f in clip_dict:
            if source.get(f) is not None:
                clip_dict[f] = source[f]
    vt = "vision_tower.clip.vision_model."
    clip_hidden = shape(vt + "embeddings.class_embedding")[0]
    patch = shape(vt + "embeddings.patch_embedding.weight")[-1]
    positions = shape(vt + "embeddings.position_embedding.weight")[0]
    grid = round((positions - 1) ** 0.5)
    clip_dict.update(
        hidden_size=clip_hidden,
        patch_size=patch,
        image_size=grid * patch,
        num_hidden_layers=len(_layer_ids(keys, re.escape(vt) + r"encoder\.layers\.(\d+)\.")),
        intermediate_size=shape(vt + "encoder.layers.0.mlp.fc1.weight")[0],
    )
    cfg.vision.clip = clip_dict
    if isinstance(official.get("mm_vision_select_layer"), int):
        cfg.vision.select_layer = official["mm_vision_select_layer"]

    # Projector, region adapter, [SEG] head
    cfg.projector.type = "mlp2x_gelu" if "projector.net.2.weight" in keys else "linear"
    stated = official.get("mm_projector_type")
    if isinstance(stated, str) and stated != cfg.projector.type:
        notes.append(
            f"config.json says mm_projector_type={stated} but the weights form a "
            f"{cfg.projector.type} projector; used {cfg.projector.type}."
        )
    cfg.projector.in_features, cfg.projector.out_features = clip_hidden, hidden
    cfg.region.in_features, cfg.region.out_features = clip_hidden, hidden
    # The released model pools CLIP features only; a preset's shape layer would be left empty.
    cfg.region.shape_features = False
    cfg.projector.output_rms = cfg.region.output_rms = None  # no norm layers were released
    if isinstance(official.get("max_sample_point"), int):
        cfg.region.max_sample_points = official["max_sample_point"]
    # The released weights were trained on the released preprocessing: its region sampler and
    # the integer-truncated CLIP mean as padding colour (see docs/fidelity.md).
    cfg.region.pooling = "official"
    cfg.vision.pad_color = "official"
    cfg.seg_head = SegHeadConfig(
        in_features=hidden,
        hidden_features=shape("seg_head.net.0.weight")[0],
        out_features=shape("seg_head.net.2.weight")[0],
        dropout=cfg.seg_head.dropout,
    )
    if isinstance(official.get("mm_use_im_start_end"), bool):
        cfg.use_im_start_end = official["mm_use_im_start_end"]

    # Tokenizer-dependent ids, as `medplib.checkpoint.build_model` sets them.
    try:
        special = SpecialTokenIds.from_tokenizer(tokenizer, cfg.seg_token)
    except ValueError as exc:
        raise UserInputError(f"The tokenizer lacks MedPLIB's special tokens ({exc}).") from None
    if len(tokenizer) > vocab:
        raise UserInputError(
            f"The tokenizer has {len(tokenizer)} tokens but the embedding table only {vocab} rows; "
            "the tokenizer files do not belong to these weights."
        )
    cfg.seg_token_id = special.seg
    llama.update(bos_token_id=special.bos, eos_token_id=special.eos, pad_token_id=special.pad)
    cfg.name, cfg.trained = name, True
    try:
        cfg.validate()
    except ValueError as exc:
        raise UserInputError(
            f"The weights do not form a consistent MedPLIB model: {exc}."
        ) from None
    return cfg, notes


def _check_shapes(config: MedPLIBConfig, refs: Mapping[str, TensorRef]) -> list[str]:
    """Our keys the sources lack, after raising on unexpected keys or shape mismatches."""
    with torch.device("meta"):
        model = MedPLIBForCausalLM(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    shapes = {k: r.shape for k, r in refs.items()}
    unexpected = sorted(set(shapes) - set(expected))
    if unexpected:
        named = [f"{refs[k].file.name}:{refs[k].key}" for k in unexpected]
        raise UserInputError(_unknown_message(named, "The sources"))
    wrong = [
        f"{k} {shapes[k]} vs {expected[k]}"
        for k in sorted(shapes)
        if tuple(shapes[k]) != expected[k]
    ]
    if wrong:
        raise UserInputError(
            f"{len(wrong)} weights do not fit the model built from the configs and --preset "
            f"(got vs expected): {'; '.join(wrong[:5])}; pick the --preset this checkpoint was made from."
        )
    return sorted(set(expected) - set(shapes))


# ---------------------------------------------------------------------------------- writing
class _LazyState(Mapping[str, torch.Tensor]):
    """Our-layout state dict whose tensors are read (and cast) only when indexed."""

    def __init__(self, refs: dict[str, TensorRef], dtype: torch.dtype | None) -> None:
        self.refs, self.dtype = refs, dtype

    def _target(self, key: str) -> torch.dtype | None:
        if self.dtype is None or not self.refs[key].floating:
            return None
        # Routing decisions stay in fp32 whatever the rest of the model uses.
        return torch.float32 if key.endswith(_ROUTER_SUFFIX) else self.dtype

    def nbytes(self, key: str) -> int:
        ref, target = self.refs[key], self._target(key)
        itemsize = ref.itemsize if target is None else target.itemsize
        return ref.numel * itemsize

    def __getitem__(self, key: str) -> torch.Tensor:
        t = self.refs[key].load()
        target = self._target(key)
        if target is not None:
            t = t.to(target)
        return t.contiguous()

    def __iter__(self) -> Iterator[str]:
        return iter(self.refs)

    def __len__(self) -> int:
        return len(self.refs)


def _write_weights(
    state: _LazyState, out: Path, fingerprint: str, max_shard_bytes: int
) -> tuple[int, int]:
    """Shard like `save_pretrained` (sorted names, greedy by size); returns (shards, total bytes)."""
    names = sorted(state)
    groups: list[list[str]] = [[]]
    size = 0
    for name in names:
        nbytes = state.nbytes(name)
        if groups[-1] and size + nbytes > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    meta = {"format": "pt", FINGERPRINT_KEY: fingerprint}
    weight_map: dict[str, str] = {}
    total = 0
    for i, group in enumerate(groups, start=1):
        tensors: dict[str, torch.Tensor] = {}
        seen: set[int] = set()
        for name in group:
            t = state[name]
            if t.data_ptr() in seen:
                t = t.clone()  # safetensors refuses tensors sharing storage
            seen.add(t.data_ptr())
            tensors[name] = t
            total += t.numel() * t.element_size()
        fname = (
            WEIGHTS_NAME if len(groups) == 1 else f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        )
        save_file(tensors, str(out / fname), metadata=meta)
        weight_map.update(dict.fromkeys(group, fname))
        del tensors
    if len(groups) > 1:
        index = {
            "metadata": {"total_size": total, FINGERPRINT_KEY: fingerprint},
            "weight_map": weight_map,
        }
        (out / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True))
    return len(groups), total


# ---------------------------------------------------------------------------------- entry point
def convert_official(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    clip: str | os.PathLike | None = None,
    sam: str | os.PathLike | None = None,
    preset: str = "medplib-7b-2e",
    dtype: torch.dtype | None = None,
    name: str | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    trust_pickle: bool = False,
    overwrite: bool = False,
) -> ConversionReport:
    """Convert the released checkpoint at `src` into a `load_pretrained` directory at `dst`.

    `clip`: a CLIP checkpoint directory (or weights file) for a checkpoint without the vision
    tower; `sam`: ``sam-med2d_b.pth`` for one without SAM-Med2D. `dtype` casts floating
    weights (router weights stay fp32); None keeps the stored dtypes. Raises UserInputError
    naming unknown weights, missing components or shape mismatches; nothing is left at `dst`
    on failure.
    """
    src_dir, out = Path(src), Path(dst)
    if not src_dir.is_dir():
        raise UserInputError(
            f"SRC {src_dir} is not a directory; pass the downloaded checkpoint folder."
        )
    if out.resolve() == src_dir.resolve():
        raise UserInputError("DST must differ from SRC; the conversion writes a new directory.")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserInputError(
            f"DST {out} exists and is not empty; pass --overwrite or choose a new path."
        )
    if preset not in _presets():
        raise UserInputError(f"Unknown preset {preset!r}; choose one of {sorted(_presets())}.")

    plan = _Plan()
    refs, notes = directory_refs(src_dir, trust_pickle=trust_pickle)
    if not refs:
        raise UserInputError(
            f"{src_dir} has no *.safetensors or pytorch_model*.bin weights; is it the checkpoint folder?"
        )
    plan.add(refs, OFFICIAL_TO_OURS, IGNORED_OFFICIAL, "checkpoint")
    if plan.unknown:
        raise UserInputError(_unknown_message(plan.unknown, str(src_dir)))
    clip_config = None
    if clip is not None:
        clip_path = Path(clip)
        if clip_path.is_dir():
            clip_refs, clip_notes = directory_refs(clip_path, trust_pickle=trust_pickle)
            notes += clip_notes
            clip_config = _read_json(clip_path / CONFIG_NAME)
        elif clip_path.is_file():
            clip_refs = (
                safetensors_refs(clip_path)
                if clip_path.suffix == ".safetensors"
                else torch_file_refs(clip_path, trust_pickle=trust_pickle)
            )
            clip_config = _read_json(clip_path.parent / CONFIG_NAME)
        else:
            raise UserInputError(f"--clip {clip_path} does not exist.")
        plan.add(clip_refs, CLIP_TO_OURS, IGNORED_CLIP, "clip")
    if sam is not None:
        sam_path = Path(sam)
        if not sam_path.is_file():
            raise UserInputError(f"--sam {sam_path} is not a file; pass sam-med2d_b.pth.")
        sam_refs = torch_file_refs(sam_path, trust_pickle=trust_pickle, inner="model")
        plan.add(sam_refs, SAM_TO_OURS, IGNORED_SAM, "sam")
    if plan.unknown:
        raise UserInputError(_unknown_message(plan.unknown, "--clip/--sam"))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        tokenizer, tokenizer_record = load_checkpoint_tokenizer(src_dir, tmp)
        if tokenizer_record.get("legacy_stated") is False:
            notes.append(
                "tokenizer_config.json does not state `legacy`; used legacy=True, as the official "
                "code passes."
            )
        shapes = {k: r.shape for k, r in plan.refs.items()}
        config, cfg_notes = build_converted_config(
            shapes,
            tokenizer,
            preset=preset,
            official=_read_json(src_dir / CONFIG_NAME),
            clip=clip_config,
            name=name or src_dir.name,
        )
        notes += cfg_notes
        missing = _check_shapes(config, plan.refs)
        if missing:
            raise UserInputError(_missing_message(missing))

        state = _LazyState(plan.refs, dtype)
        # weights_fingerprint only iterates and indexes, so the lazy mapping streams each tensor once.
        fingerprint = weights_fingerprint(state)  # type: ignore[arg-type]
        num_shards, total = _write_weights(state, tmp, fingerprint, max_shard_bytes)
        (tmp / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2))
        origins = list(plan.origin.values())
        report = ConversionReport(
            source=str(src_dir),
            output=str(out),
            checkpoint_id=checkpoint_id(config, fingerprint),
            num_tensors=len(state),
            total_bytes=total,
            num_shards=num_shards,
            from_checkpoint=origins.count("checkpoint"),
            from_clip=origins.count("clip"),
            from_sam=origins.count("sam"),
            overridden_by_checkpoint=plan.overridden,
            ignored=sorted(plan.ignored),
            notes=notes,
            tokenizer=tokenizer_record,
        )
        (tmp / REPORT_NAME).write_text(json.dumps(report.to_dict(), indent=2))
        os.chmod(tmp, 0o755)  # mkdtemp is private; a model directory is meant to be shared
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return report


def _presets() -> set[str]:
    from medplib.modeling.presets import PRESETS

    return set(PRESETS)
