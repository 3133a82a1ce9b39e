"""Configuration dataclasses for the SAM-Med2D pixel decoder.

One frozen dataclass per component plus a composite, each convertible to and from a plain,
JSON-compatible dict so the composite can live inside a larger model's config.json.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from medplib.errors import UserInputError

_C = TypeVar("_C", bound="_DictConfig")


class _DictConfig:
    """Plain-dict round trip shared by the component configs (tuples become lists in JSON)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls: type[_C], data: dict[str, Any]) -> _C:
        known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise UserInputError(
                f"{cls.__name__} got unknown keys {unknown}; valid keys are {sorted(known)}."
            )
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)


@dataclass(frozen=True)
class SamImageEncoderConfig(_DictConfig):
    """ViT image encoder with SAM-Med2D adapters (defaults: the released SAM-Med2D-B)."""

    img_size: int = 256  # SAM-Med2D-B was fine-tuned on 256x256 inputs; MedPLIB feeds 256
    patch_size: int = 16  # ViT-B/16 patching -> a 16x16 token grid at 256 px
    in_chans: int = 3  # RGB; grey-scale scans are replicated to three channels
    embed_dim: int = 768  # ViT-B width
    depth: int = 12  # ViT-B depth
    num_heads: int = 12  # ViT-B heads (64 channels per head)
    mlp_ratio: float = 4.0  # standard ViT MLP expansion
    out_chans: int = 256  # neck output = prompt/decoder width of SAM
    qkv_bias: bool = True  # SAM's ViT keeps biases on q, k and v
    use_abs_pos: bool = True  # learned absolute embedding on the token grid
    use_rel_pos: bool = True  # decomposed relative positions in every attention block
    window_size: int = 14  # SAM's window; the 16x16 grid is zero-padded to 28x28 for windows
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)  # ViT-B blocks with global attention
    adapter: bool = True  # SAM-Med2D adds a channel+spatial adapter to every block
    adapter_mlp_ratio: float = 0.25  # adapter channel-gate bottleneck (768 -> 192)
    layer_norm_eps: float = 1e-6  # SAM builds its ViT LayerNorms with eps 1e-6
    adapter_layer_norm_eps: float = 1e-5  # the adapter's own LayerNorm keeps the torch default

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise UserInputError(
                f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}."
            )
        if self.embed_dim % self.num_heads:
            raise UserInputError(
                f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}."
            )
        if any(not 0 <= i < self.depth for i in self.global_attn_indexes):
            raise UserInputError(
                f"global_attn_indexes {self.global_attn_indexes} must lie in [0, {self.depth})."
            )
        if self.adapter and self.grid_size % 2:
            # The adapter halves then doubles the grid, which only round-trips for even sizes.
            raise UserInputError(
                f"img_size / patch_size = {self.grid_size} must be even when adapter=True."
            )

    @property
    def grid_size(self) -> int:
        """Side of the token grid (and of the image embedding)."""
        return self.img_size // self.patch_size


@dataclass(frozen=True)
class SamPromptEncoderConfig(_DictConfig):
    """Prompt encoder (defaults: SAM-Med2D-B at 256 px)."""

    embed_dim: int = 256  # must equal the image encoder's out_chans
    image_embedding_size: tuple[int, int] = (16, 16)  # (h, w) token grid = 256 / 16
    input_image_size: tuple[int, int] = (256, 256)  # (H, W) padded encoder input, in pixels
    mask_in_chans: int = 16  # hidden width of the mask-prompt downscaler, as in SAM


@dataclass(frozen=True)
class SamMaskDecoderConfig(_DictConfig):
    """Two-way-transformer mask decoder (defaults: SAM / SAM-Med2D)."""

    transformer_dim: int = 256  # must equal the prompt embedding width
    depth: int = 2  # two TwoWayAttentionBlocks
    num_heads: int = 8  # 32 channels per head in self-attention
    mlp_dim: int = 2048  # token MLP width inside each block
    attention_downsample_rate: int = 2  # cross attention runs at half width (128)
    num_multimask_outputs: int = 3  # ambiguity masks; +1 single-mask token
    iou_head_depth: int = 3  # layers of the IoU-prediction MLP
    iou_head_hidden_dim: int = 256  # width of the IoU-prediction MLP

    def __post_init__(self) -> None:
        internal = self.transformer_dim // self.attention_downsample_rate
        if self.transformer_dim % self.num_heads or internal % self.num_heads:
            raise UserInputError(
                f"num_heads {self.num_heads} must divide transformer_dim {self.transformer_dim} "
                f"and its downsampled width {internal}."
            )
        if self.transformer_dim % 8:
            raise UserInputError(
                f"transformer_dim {self.transformer_dim} must be a multiple of 8 (mask upscaling)."
            )


@dataclass(frozen=True)
class SamMed2DConfig:
    """Composite config of the SAM-Med2D pixel decoder used by MedPLIB."""

    image_encoder: SamImageEncoderConfig = field(default_factory=SamImageEncoderConfig)
    prompt_encoder: SamPromptEncoderConfig = field(default_factory=SamPromptEncoderConfig)
    mask_decoder: SamMaskDecoderConfig = field(default_factory=SamMaskDecoderConfig)
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)  # ImageNet, 0-255 units
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)  # ImageNet, 0-255 units

    def __post_init__(self) -> None:
        enc, prm, dec = self.image_encoder, self.prompt_encoder, self.mask_decoder
        if not enc.out_chans == prm.embed_dim == dec.transformer_dim:
            raise UserInputError(
                f"image_encoder.out_chans ({enc.out_chans}), prompt_encoder.embed_dim "
                f"({prm.embed_dim}) and mask_decoder.transformer_dim ({dec.transformer_dim}) "
                "must be equal."
            )
        if tuple(prm.image_embedding_size) != (enc.grid_size, enc.grid_size):
            raise UserInputError(
                f"prompt_encoder.image_embedding_size {prm.image_embedding_size} must be "
                f"({enc.grid_size}, {enc.grid_size}) for img_size {enc.img_size}."
            )
        if tuple(prm.input_image_size) != (enc.img_size, enc.img_size):
            raise UserInputError(
                f"prompt_encoder.input_image_size {prm.input_image_size} must be "
                f"({enc.img_size}, {enc.img_size})."
            )

    @classmethod
    def vit_b(cls) -> SamMed2DConfig:
        """The released SAM-Med2D-B (`sam-med2d_b.pth`) used by MedPLIB: 256 px, adapters on."""
        return cls()

    @classmethod
    def tiny(cls) -> SamMed2DConfig:
        """A structurally complete model that runs in milliseconds on a CPU (tests, demos)."""
        dim = 64
        return cls(
            image_encoder=SamImageEncoderConfig(
                img_size=128,
                embed_dim=dim,
                depth=2,
                num_heads=4,
                out_chans=dim,
                window_size=3,  # 8x8 grid is padded to 9x9: exercises window padding
                global_attn_indexes=(1,),
            ),
            prompt_encoder=SamPromptEncoderConfig(
                embed_dim=dim, image_embedding_size=(8, 8), input_image_size=(128, 128)
            ),
            mask_decoder=SamMaskDecoderConfig(
                transformer_dim=dim, num_heads=4, mlp_dim=256, iou_head_hidden_dim=dim
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_encoder": self.image_encoder.to_dict(),
            "prompt_encoder": self.prompt_encoder.to_dict(),
            "mask_decoder": self.mask_decoder.to_dict(),
            "pixel_mean": list(self.pixel_mean),
            "pixel_std": list(self.pixel_std),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamMed2DConfig:
        known = {"image_encoder", "prompt_encoder", "mask_decoder", "pixel_mean", "pixel_std"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserInputError(
                f"SamMed2DConfig got unknown keys {unknown}; valid keys are {sorted(known)}."
            )
        kwargs: dict[str, Any] = {}
        if "image_encoder" in data:
            kwargs["image_encoder"] = SamImageEncoderConfig.from_dict(data["image_encoder"])
        if "prompt_encoder" in data:
            kwargs["prompt_encoder"] = SamPromptEncoderConfig.from_dict(data["prompt_encoder"])
        if "mask_decoder" in data:
            kwargs["mask_decoder"] = SamMaskDecoderConfig.from_dict(data["mask_decoder"])
        for key in ("pixel_mean", "pixel_std"):
            if key in data:
                kwargs[key] = tuple(float(v) for v in data[key])
        return cls(**kwargs)
