"""Configuration dataclasses for MedPLIB: one per component plus the composite `MedPLIBConfig`.

Every config is a plain dataclass that round-trips through JSON (`to_dict` / `from_dict`).
The transformers sub-model configs (CLIP vision, LLaMA) and the SAM-Med2D config are held as
plain dicts so `config.json` stays readable and independent of library versions.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from transformers import CLIPVisionConfig, LlamaConfig

T = TypeVar("T")

PAD_COLORS = ("mean", "official")  # VisionTowerConfig.pad_color
REGION_POOLINGS = ("area", "official")  # RegionEncoderConfig.pooling
ROUTER_DTYPES = ("fp32", "model")  # MoEConfig.router_dtype


def _from_dict(cls: type[T], data: dict[str, Any]) -> T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"{cls.__name__} got unknown keys {unknown}; is the config from a newer version?"
        )
    return cls(**data)


@functools.cache
def _clip_defaults() -> dict[str, Any]:
    defaults = CLIPVisionConfig()
    return {n: getattr(defaults, n) for n in ("image_size", "patch_size", "hidden_size")}


def _square_side(value: Any, name: str) -> int:
    """One side of a CLIP size, which transformers 5 also accepts as an (h, w) pair."""
    if isinstance(value, list | tuple):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"CLIP {name} must be square, got {value!r}")
        value = value[0]
    if value is None:
        raise ValueError(f"CLIP {name} is not set")
    return int(value)


@dataclass
class VisionTowerConfig:
    """CLIP vision encoder feeding the LLM (visual tokens) and the region encoder."""

    # transformers CLIPVisionConfig kwargs; CLIP ViT-L/14 @ 336 in the official model.
    clip: dict[str, Any] = field(default_factory=dict)
    # LLaVA-v1.5 reads the penultimate layer: the last one is tuned to the contrastive head.
    select_layer: int = -2
    # "patch" drops CLS so the tokens map 1:1 onto the patch grid used by region pooling.
    select_feature: str = "patch"
    # CLIP's own normalisation statistics (OpenAI CLIP), applied after centre padding.
    image_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    # Colour of the centre padding around non-square images. "mean": the exact `image_mean`
    # (0 after normalisation; this project's models). "official": the mean x 255 truncated to
    # integers, (122, 116, 104) for CLIP, as the released pipeline pads before normalising;
    # converted official checkpoints use it.
    pad_color: str = "mean"

    def __post_init__(self) -> None:
        if self.pad_color not in PAD_COLORS:
            raise ValueError(f"pad_color must be one of {list(PAD_COLORS)}, not {self.pad_color!r}")

    def clip_config(self) -> CLIPVisionConfig:
        return CLIPVisionConfig(**self.clip)

    def _clip_value(self, name: str) -> Any:
        # Building a CLIPVisionConfig costs about 0.3 ms, and collation asks for the sizes
        # of every sample: read the dict, falling back on transformers' default.
        return self.clip[name] if name in self.clip else _clip_defaults()[name]

    @property
    def image_size(self) -> int:
        return _square_side(self._clip_value("image_size"), "image_size")

    @property
    def patch_size(self) -> int:
        return _square_side(self._clip_value("patch_size"), "patch_size")

    @property
    def hidden_size(self) -> int:
        return int(self._clip_value("hidden_size"))

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_mean"], d["image_std"] = list(self.image_mean), list(self.image_std)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VisionTowerConfig:
        data = dict(data)
        for key in ("image_mean", "image_std"):
            if key in data:
                data[key] = tuple(data[key])
        return _from_dict(cls, data)


@dataclass
class ProjectorConfig:
    """Maps CLIP patch features to LLM token embeddings."""

    # LLaVA-v1.5's projector: Linear -> GELU -> Linear.
    type: str = "mlp2x_gelu"
    in_features: int = 1024  # CLIP ViT-L hidden size
    out_features: int = 4096  # LLaMA-7B hidden size
    # RMS-normalise the visual tokens, with a learnable gain starting at this value (None: no
    # norm, as released). A projector trained from scratch next to a from-scratch LLM drifts to
    # token norms ~1000x the text embeddings'; the LLM's residual stream at those positions
    # then barely changes, so image tokens cannot gather context from each other.
    output_rms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProjectorConfig:
        return _from_dict(cls, data)


@dataclass
class RegionEncoderConfig:
    """Pools one LLM-sized feature per region mask from the raw CLIP patch features."""

    in_features: int = (
        1024  # CLIP hidden size: the adapter reads raw patches, not the projector output
    )
    out_features: int = 4096  # LLM hidden size
    # At most this many grid cells (the highest-coverage ones) enter the weighted mean; the
    # official sampler subsamples 512 points. 0 keeps every covered cell.
    max_sample_points: int = 512
    # Add an embedding of the region's shape (size, centre, spread, how full its fullest cell
    # is) to the pooled feature. The mean of patch features cannot tell a 4-px nodule from the
    # lung around it when both fill the same patch; the shape can. Off for the official
    # weights, which have no such layer.
    shape_features: bool = False
    # RMS-normalise the pooled CLIP feature (learnable gain starting here; None: as released)
    # before the shape embedding is added: unnormalised, the pooled feature's norm drowned the
    # shape embedding (measured 163 vs 2.5).
    output_rms: float | None = None
    # How a region mask becomes weights over the patch grid. "area": each cell weighted by the
    # fraction the region covers (exact and deterministic; tiny regions keep their cells; this
    # project's models). "official": the released sampler, which the published region adapter
    # was trained on: the mask at each patch's top-left pixel, then the mean of bilinear samples
    # at those cells taken with align_corners=True (shifted towards the top-left), at most
    # `max_sample_points` random ones. Converted official checkpoints use it.
    pooling: str = "area"
    # Seed of the official sampler's point subset (regions with more than `max_sample_points`
    # cells) in eval mode, so a question gets the same answer every time; training draws a
    # fresh subset each step, as the released code does.
    sample_seed: int = 0

    def __post_init__(self) -> None:
        if self.pooling not in REGION_POOLINGS:
            raise ValueError(
                f"region pooling must be one of {list(REGION_POOLINGS)}, not {self.pooling!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegionEncoderConfig:
        return _from_dict(cls, data)


LEGACY_ROPE_KEYS = ("rope_theta", "rope_scaling")


def standard_rope(llama: dict[str, Any]) -> dict[str, Any]:
    """`llama` with RoPE settings in one ``rope_parameters`` dict (``rope_type``, ``rope_theta``, …).

    Configs written before transformers 5 (and LLaMA config.json files) state RoPE as top-level
    ``rope_theta`` and ``rope_scaling`` (whose ``type`` is now ``rope_type``); those keys are
    folded in, winning over the same fields of an existing ``rope_parameters`` because they were
    set explicitly. A dict without any RoPE key is returned unchanged (LlamaConfig's default).
    """
    out = {k: v for k, v in llama.items() if k not in LEGACY_ROPE_KEYS}
    legacy = dict(llama.get("rope_scaling") or {})
    if "type" in legacy:
        legacy.setdefault("rope_type", legacy.pop("type"))
    if llama.get("rope_theta") is not None:
        legacy["rope_theta"] = llama["rope_theta"]
    if not legacy and "rope_parameters" not in llama:
        return out
    rope = {**dict(llama.get("rope_parameters") or {}), **legacy}
    rope.setdefault("rope_type", "default")
    out["rope_parameters"] = rope
    return out


@dataclass
class LanguageModelConfig:
    """LLaMA decoder (transformers `LlamaForCausalLM`)."""

    # transformers LlamaConfig kwargs; LLaMA-7B (Vicuna-1.5 / LLaVA-1.5) with 32267 tokens officially.
    llama: dict[str, Any] = field(default_factory=dict)
    # SDPA is exact attention, available on every device, and faster than eager.
    attn_implementation: str = "sdpa"

    def __post_init__(self) -> None:
        self.llama = standard_rope(self.llama)

    def llama_config(self) -> LlamaConfig:
        # `llama` may have been replaced after construction (checkpoint conversion does).
        cfg = LlamaConfig(**standard_rope(self.llama))
        cfg._attn_implementation = self.attn_implementation
        return cfg

    @property
    def hidden_size(self) -> int:
        return int(self.llama_config().hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.llama_config().vocab_size)

    @property
    def num_layers(self) -> int:
        return int(self.llama_config().num_hidden_layers)

    @property
    def max_position_embeddings(self) -> int:
        return int(self.llama_config().max_position_embeddings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LanguageModelConfig:
        return _from_dict(cls, data)


@dataclass
class MoEConfig:
    """Mixture-of-experts FFN settings (official stage IV: DeepSpeed MoE, 2 experts, top-1)."""

    # 2 = MedPLIB's grounding + VL experts; 1 = a plain dense LLaMA FFN (stages II and III).
    num_experts: int = 2
    # Each token runs exactly one expert, so compute per token equals the dense model.
    top_k: int = 1
    # Training capacity: an expert takes at most ceil(tokens / experts * 1.5) tokens.
    capacity_factor: float = 1.5
    # Eval capacity: with 2 experts and factor 2 the capacity equals the token count (no drops).
    eval_capacity_factor: float = 2.0
    # DeepSpeed default: no floor under the computed capacity.
    min_capacity: int = 0
    # The released stage-IV script sets 0.0, i.e. no load-balancing loss.
    router_aux_loss_coef: float = 0.0
    # "all" = every decoder layer (official `moe_mode dense`), or explicit layer indices.
    layers: str | list[int] = "all"
    # DeepSpeed top-1 combine weights multiply the expert output by its router probability.
    scale_by_router_prob: bool = True
    # With scale_by_router_prob: multiply by p / stop_gradient(p) instead of p, i.e. by exactly
    # 1 in the forward pass while the router still gets the gradient of the p-scaled output. A
    # fresh router then starts from the experts' outputs at the scale they were trained at
    # rather than about halved. Off = DeepSpeed's combine (the published weights).
    straight_through_router: bool = False
    # Storage dtype of the router weights. "fp32": kept in fp32 in a bf16/fp16 model, as
    # DeepSpeed's gate is built. "model": cast with the rest of the model, as the official
    # evaluation does (it casts the whole model, gate included, to bf16). Either way the
    # routing matmul and softmax run in fp32, as DeepSpeed's gate computes them.
    router_dtype: str = "fp32"

    def __post_init__(self) -> None:
        if self.num_experts < 1:
            raise ValueError(f"num_experts must be at least 1, got {self.num_experts}")
        if self.top_k != 1:
            raise ValueError(f"only top-1 routing is implemented, got top_k={self.top_k}")
        if isinstance(self.layers, str) and self.layers != "all":
            raise ValueError(f"layers must be 'all' or a list of indices, got {self.layers!r}")
        if self.straight_through_router and not self.scale_by_router_prob:
            raise ValueError(
                "straight_through_router needs scale_by_router_prob: without the scaling "
                "the router gets no gradient to pass straight through"
            )
        if self.router_dtype not in ROUTER_DTYPES:
            raise ValueError(
                f"router_dtype must be one of {list(ROUTER_DTYPES)}, not {self.router_dtype!r}"
            )

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    def layer_indices(self, num_layers: int) -> list[int]:
        if not self.is_moe:
            return []
        if self.layers == "all":
            return list(range(num_layers))
        indices = sorted({int(i) % num_layers for i in self.layers})
        return indices

    def capacity(self, num_tokens: int, training: bool) -> int:
        factor = self.capacity_factor if training else self.eval_capacity_factor
        cap = math.ceil(num_tokens / self.num_experts * factor)
        return max(cap, self.min_capacity)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layers"] = self.layers if isinstance(self.layers, str) else list(self.layers)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MoEConfig:
        return _from_dict(cls, data)


@dataclass
class SegHeadConfig:
    """Projects the hidden state that predicts `<SEG>` into one SAM prompt token."""

    in_features: int = 4096  # LLM hidden size
    hidden_features: int = 4096  # official `text_hidden_fcs` keeps the width
    out_features: int = 256  # SAM prompt embedding dim
    dropout: float = 0.0  # official value; kept as a knob

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegHeadConfig:
        return _from_dict(cls, data)


CE_REDUCTIONS = ("token", "sample")


@dataclass
class LossConfig:
    """Weights of the training losses (official stage-IV values)."""

    ce_weight: float = 1.0  # next-token cross-entropy on answer tokens
    # "token": CE averaged over all answer tokens of a batch (official). "sample": each answer
    # counts once, so yes/no and left/right answers are not outweighed by long descriptions.
    ce_reduction: str = "token"
    bce_weight: float = 2.0  # per-mask mean BCE with logits (stage III: 1.0)
    dice_weight: float = 0.5  # soft Dice (stage III: 5.0)
    focal_weight: float = 0.0  # focal loss (stage III: 1.0)
    focal_alpha: float = 0.25  # RetinaNet defaults, as in the official code
    focal_gamma: float = 2.0
    dice_eps: float = 1e-6  # smoothing of the soft Dice ratio

    def validate(self) -> None:
        """Raises ValueError naming the field (without the ``losses.`` prefix)."""
        if self.ce_reduction not in CE_REDUCTIONS:
            raise ValueError(
                f"ce_reduction must be one of {list(CE_REDUCTIONS)}, not {self.ce_reduction!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LossConfig:
        return _from_dict(cls, data)


@dataclass
class MedPLIBConfig:
    """The whole model: component configs plus model-level settings."""

    name: str = "tiny"  # preset or checkpoint name, shown to users
    trained: bool = False  # False marks random or placeholder weights
    vision: VisionTowerConfig = field(default_factory=VisionTowerConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    region: RegionEncoderConfig = field(default_factory=RegionEncoderConfig)
    language: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)
    seg_head: SegHeadConfig = field(default_factory=SegHeadConfig)
    # SamMed2DConfig.to_dict(); SAM-Med2D ViT-B with adapters at 256 px officially.
    sam: dict[str, Any] = field(default_factory=dict)
    losses: LossConfig = field(default_factory=LossConfig)
    seg_token: str = "<SEG>"  # the grounding token; each occurrence in an answer yields a mask
    # Id of `seg_token` in the paired tokenizer (set when model and tokenizer are built together).
    seg_token_id: int | None = None
    # Official binarisation threshold on sigmoid(logits); 0.5 is the other common choice.
    mask_threshold: float = 0.1
    # Mirror test-time augmentation (not in the official model, so off by default): each <SEG>
    # is also decoded on the left-right mirrored image, and the two probability maps are
    # averaged where their masks (cut at sigmoid 0.5) agree with Dice >= this value. Mirroring
    # swaps left and right, so a "left kidney" answer disagrees with its mirror and keeps the
    # plain mask. None: off.
    flip_tta_min_agreement: float | None = None
    # Mirror check of closed left/right answers (not in the official model, so off by default;
    # `medplib.side_tta`): where log p(answer) - log p(other side) on the image is under this
    # margin, the answer is weighed on the mirrored image too. None: off.
    side_tta_max_margin: float | None = None
    # Grounding check of yes/no answers to presence questions (not in the official model, so
    # off by default; `medplib.presence_check`): where log p(answer) - log p(other) is under
    # this margin, the structure is segmented and its mask decides. None: off.
    presence_check_max_margin: float | None = None
    # The mean probability inside that mask (cut at 0.5) from which the structure counts as
    # there; only read while the check is on.
    presence_check_min_mask_score: float = 0.85
    # Grounding check of yes/no answers about one marked region ("Is the region … the heart?";
    # `medplib.region_check`): where the answer's log-odds are under this margin, the structure
    # is segmented and the share of the region its mask (cut at 0.5) covers decides. None: off.
    region_check_max_margin: float | None = None
    # The share of the region the mask must cover for "Yes"; only read while the check is on.
    region_check_min_coverage: float = 0.5
    # Image tokens are wrapped as <im_start><image><im_end> (LLaVA `use_mm_start_end`).
    use_im_start_end: bool = True
    format_version: int = 1  # bump when the checkpoint layout changes

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trained": self.trained,
            "vision": self.vision.to_dict(),
            "projector": self.projector.to_dict(),
            "region": self.region.to_dict(),
            "language": self.language.to_dict(),
            "moe": self.moe.to_dict(),
            "seg_head": self.seg_head.to_dict(),
            "sam": dict(self.sam),
            "losses": self.losses.to_dict(),
            "seg_token": self.seg_token,
            "seg_token_id": self.seg_token_id,
            "mask_threshold": self.mask_threshold,
            "flip_tta_min_agreement": self.flip_tta_min_agreement,
            "side_tta_max_margin": self.side_tta_max_margin,
            "presence_check_max_margin": self.presence_check_max_margin,
            "presence_check_min_mask_score": self.presence_check_min_mask_score,
            "region_check_max_margin": self.region_check_max_margin,
            "region_check_min_coverage": self.region_check_min_coverage,
            "use_im_start_end": self.use_im_start_end,
            "format_version": self.format_version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MedPLIBConfig:
        data = dict(data)
        parts = {
            "vision": VisionTowerConfig,
            "projector": ProjectorConfig,
            "region": RegionEncoderConfig,
            "language": LanguageModelConfig,
            "moe": MoEConfig,
            "seg_head": SegHeadConfig,
            "losses": LossConfig,
        }
        for key, part in parts.items():
            if key in data:
                data[key] = part.from_dict(data[key])  # type: ignore[attr-defined]
        return _from_dict(cls, data)

    def validate(self) -> None:
        """Check that the component widths agree; raises ValueError naming the mismatch."""
        d_clip, d_llm = self.vision.hidden_size, self.language.hidden_size
        checks = [
            ("projector.in_features", self.projector.in_features, d_clip),
            ("projector.out_features", self.projector.out_features, d_llm),
            ("region.in_features", self.region.in_features, d_clip),
            ("region.out_features", self.region.out_features, d_llm),
            ("seg_head.in_features", self.seg_head.in_features, d_llm),
        ]
        for name, got, want in checks:
            if got != want:
                raise ValueError(f"{name} is {got} but must be {want} to match the model widths")
        for name, rms in (
            ("projector.output_rms", self.projector.output_rms),
            ("region.output_rms", self.region.output_rms),
        ):
            if rms is not None and not rms > 0:
                raise ValueError(f"{name} must be a positive number or null, got {rms}")
        for name, value, allowed in (
            ("vision.pad_color", self.vision.pad_color, PAD_COLORS),
            ("region.pooling", self.region.pooling, REGION_POOLINGS),
            ("moe.router_dtype", self.moe.router_dtype, ROUTER_DTYPES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, not {value!r}")
        try:
            self.losses.validate()
        except ValueError as exc:
            raise ValueError(f"losses.{exc}") from None
        if self.vision.select_feature != "patch":
            # Region pooling maps tokens 1:1 onto the patch grid, so CLS must be dropped.
            raise ValueError(
                f"vision.select_feature must be 'patch', got {self.vision.select_feature!r}"
            )
        for name in INFERENCE_SETTINGS:
            check_inference_setting(name, getattr(self, name))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _margin_or_off(value: Any) -> bool:
    return value is None or (_is_number(value) and 0.0 < value < float("inf"))


# Inference settings (not part of the weights: a training config may name them, and they are
# written into the checkpoint's config.json) → (is the value allowed, what is allowed).
_INFERENCE_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    # a sigmoid cut
    "mask_threshold": (lambda v: _is_number(v) and 0.0 < v < 1.0, "a number in (0, 1)"),
    # None: mirror TTA off; else a Dice gate
    "flip_tta_min_agreement": (
        lambda v: v is None or (_is_number(v) and 0.0 <= v <= 1.0),
        "in [0, 1] or null",
    ),
    # None: that answer check off; else a log-odds margin
    "side_tta_max_margin": (_margin_or_off, "a positive number or null"),
    "presence_check_max_margin": (_margin_or_off, "a positive number or null"),
    "region_check_max_margin": (_margin_or_off, "a positive number or null"),
    # a mean mask probability
    "presence_check_min_mask_score": (
        lambda v: _is_number(v) and 0.0 < v < 1.0,
        "a number in (0, 1)",
    ),
    # a share of the region
    "region_check_min_coverage": (lambda v: _is_number(v) and 0.0 < v <= 1.0, "a number in (0, 1]"),
}
INFERENCE_SETTINGS = tuple(_INFERENCE_CHECKS)


def check_inference_setting(name: str, value: Any) -> None:
    """ValueError unless `value` is allowed for the inference setting `name`."""
    allowed, what = _INFERENCE_CHECKS[name]
    if not allowed(value):
        raise ValueError(f"{name} must be {what}, got {value!r}")
