"""Named model presets: the official MedPLIB-7B shapes and tiny CPU-trainable variants.

`build_config(name)` returns a fresh `MedPLIBConfig`; every preset uses the same code path.
"""

from __future__ import annotations

from collections.abc import Callable

from medplib.modeling.configuration import (
    LanguageModelConfig,
    MedPLIBConfig,
    MoEConfig,
    ProjectorConfig,
    RegionEncoderConfig,
    SegHeadConfig,
    VisionTowerConfig,
)
from medplib.modeling.sam_med2d import SamMed2DConfig
from medplib.tokenization import ADDED_TOKENS

OFFICIAL_VOCAB_SIZE = 32000 + len(ADDED_TOKENS)  # LLaMA's 32000 + 267 MedPLIB tokens = 32267

# CLIP ViT-L/14 @ 336 (openai/clip-vit-large-patch14-336): 24 x 24 = 576 patches of width 1024.
CLIP_VIT_L_336 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}

# LLaMA-2-7B / Vicuna-7B-v1.5 as shipped in llava-v1.5-7b, vocabulary grown by the added tokens.
LLAMA_7B = {
    "vocab_size": OFFICIAL_VOCAB_SIZE,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}

# Tiny CLIP: 128 px / patch 16 -> 8 x 8 = 64 visual tokens, 3 layers so layer -2 is a real block.
CLIP_TINY = {
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "image_size": 128,
    "patch_size": 16,
    "projection_dim": 64,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}

# Tiny LLaMA: hidden 256, 4 layers (≈3 M parameters without embeddings); vocab set from the tokenizer.
LLAMA_TINY = {
    "vocab_size": 1024 + len(ADDED_TOKENS),
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-5,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}


def _compose(
    name: str,
    clip: dict,
    llama: dict,
    sam: SamMed2DConfig,
    num_experts: int,
    *,
    region_shape_features: bool = False,
    visual_rms: float | None = None,
) -> MedPLIBConfig:
    d_clip, d_llm = clip["hidden_size"], llama["hidden_size"]
    prompt_dim = sam.prompt_encoder.embed_dim
    config = MedPLIBConfig(
        name=name,
        trained=False,
        vision=VisionTowerConfig(clip=dict(clip)),
        projector=ProjectorConfig("mlp2x_gelu", d_clip, d_llm, output_rms=visual_rms),
        region=RegionEncoderConfig(
            d_clip, d_llm, shape_features=region_shape_features, output_rms=visual_rms
        ),
        language=LanguageModelConfig(llama=dict(llama)),
        moe=MoEConfig(num_experts=num_experts),
        seg_head=SegHeadConfig(d_llm, d_llm, prompt_dim),
        sam=sam.to_dict(),
    )
    config.validate()
    return config


def medplib_7b_2e() -> MedPLIBConfig:
    """The released `MedPLIB-7b-2e`: every FFN a 2-expert top-1 MoE (≈11.7 B parameters)."""
    return _compose(
        "medplib-7b-2e", CLIP_VIT_L_336, LLAMA_7B, SamMed2DConfig.vit_b(), num_experts=2
    )


def medplib_7b() -> MedPLIBConfig:
    """Dense MedPLIB-7B: the architecture of the stage-II (VL) and stage-III (grounding) experts."""
    return _compose("medplib-7b", CLIP_VIT_L_336, LLAMA_7B, SamMed2DConfig.vit_b(), num_experts=1)


# The tiny presets' region encoder also reads the region's shape: 128 px in 16 px patches is
# an 8 x 8 grid and most findings are smaller than one cell (RegionEncoderConfig.shape_features).
# Their visual tokens and region features are RMS-normalised to the scale the LLM's embedding
# table starts at (its initializer_range): CLIP, projector and LLM all train from scratch here,
# and without the norm the visual tokens grew to ~1000x the text embeddings' norm.
TINY_VISUAL_RMS = 0.02


def tiny() -> MedPLIBConfig:
    """Same architecture at toy width; trains on 2 CPU cores. MoE with 2 experts."""
    return _compose(
        "tiny",
        CLIP_TINY,
        LLAMA_TINY,
        SamMed2DConfig.tiny(),
        2,
        region_shape_features=True,
        visual_rms=TINY_VISUAL_RMS,
    )


def tiny_dense() -> MedPLIBConfig:
    """Tiny dense variant (num_experts=1), for training the two experts separately."""
    return _compose(
        "tiny-dense",
        CLIP_TINY,
        LLAMA_TINY,
        SamMed2DConfig.tiny(),
        1,
        region_shape_features=True,
        visual_rms=TINY_VISUAL_RMS,
    )


PRESETS: dict[str, Callable[[], MedPLIBConfig]] = {
    "medplib-7b-2e": medplib_7b_2e,
    "medplib-7b": medplib_7b,
    "tiny": tiny,
    "tiny-dense": tiny_dense,
}


def with_sam_patch_size(config: MedPLIBConfig, patch_size: int) -> MedPLIBConfig:
    """A copy of `config` whose SAM-Med2D image encoder patches at `patch_size` px.

    The prompt encoder's embedding grid follows, so the mask decoder's output (4x the grid)
    gets finer in step. Raises UserInputError when the image size does not divide into an
    even grid of such patches.
    """
    sam = {k: dict(v) if isinstance(v, dict) else v for k, v in config.sam.items()}
    sam["image_encoder"]["patch_size"] = int(patch_size)
    grid = int(sam["image_encoder"].get("img_size", 256)) // max(int(patch_size), 1)
    sam["prompt_encoder"]["image_embedding_size"] = [grid, grid]
    result = MedPLIBConfig.from_dict(config.to_dict())
    result.sam = SamMed2DConfig.from_dict(sam).to_dict()  # checks patch, grid and sizes agree
    result.validate()
    return result


def build_config(name: str, *, vocab_size: int | None = None) -> MedPLIBConfig:
    """A fresh config of preset `name`; `vocab_size` overrides the LLM vocabulary (e.g. len(tokenizer))."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    config = PRESETS[name]()
    if vocab_size is not None:
        config.language.llama["vocab_size"] = int(vocab_size)
    return config
