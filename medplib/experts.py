"""Stage IV expert assembly: two dense MedPLIB models → one 2-expert MoE model.

Official recipe: expert 0 = the FFNs of the pixel-grounding model (stage III), expert 1 = the
FFNs of the vision-language model (stage II). Everything the language path shares — attention,
norms, embeddings, LM head, projector, region adapter and CLIP — comes from the VL model
(stage III changes none of it). The [SEG] head and all of SAM-Med2D come from the grounding
model: the VL model never runs SAM, and where stage III keeps the SAM encoders frozen (the
official recipe) both copies are the same anyway. The router starts fresh.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers.initialization import no_init_weights

from medplib.checkpoint import default_dtype, load_pretrained, save_pretrained
from medplib.modeling.configuration import MedPLIBConfig, MoEConfig
from medplib.modeling.language_model import moe_layers
from medplib.modeling.medplib import MedPLIBForCausalLM

GROUNDING_EXPERT, VL_EXPERT = 0, 1  # official expert order
_SHARED_ARCH = (
    "vision",
    "projector",
    "region",
    "language",
    "seg_head",
    "sam",
    "seg_token",
    "seg_token_id",
)


def _as_model(source: MedPLIBForCausalLM | str | os.PathLike) -> MedPLIBForCausalLM:
    if isinstance(source, MedPLIBForCausalLM):
        return source
    model, _, _ = load_pretrained(source, device="cpu", dtype=torch.float32)
    return model


def assemble_moe(
    vl: MedPLIBForCausalLM | str | os.PathLike,
    grounding: MedPLIBForCausalLM | str | os.PathLike,
    *,
    moe: MoEConfig | None = None,
    seed: int = 0,
    name: str | None = None,
) -> MedPLIBForCausalLM:
    """Build the MoE model from a dense VL model and a dense grounding model (objects or checkpoint dirs).

    `moe` defaults to the official 2-expert top-1 settings; `seed` seeds the router init.
    The result lives on CPU in the VL model's dtype; use the VL model's tokenizer with it.
    """
    vl_model, gr_model = _as_model(vl), _as_model(grounding)
    vl_cfg, gr_cfg = vl_model.config.to_dict(), gr_model.config.to_dict()
    for key in _SHARED_ARCH:
        if vl_cfg[key] != gr_cfg[key]:
            raise ValueError(
                f"the VL and grounding models differ in {key!r}; experts need identical architectures"
            )
    for label, m in (("VL", vl_model), ("grounding", gr_model)):
        if m.config.moe.is_moe:
            raise ValueError(
                f"the {label} model already has MoE layers; pass the dense stage-II / stage-III models"
            )
    moe = moe or MoEConfig(num_experts=2)
    if moe.num_experts != 2:
        raise ValueError(
            f"expert assembly makes exactly 2 experts, got num_experts={moe.num_experts}"
        )
    config = MedPLIBConfig.from_dict(vl_cfg)
    config.moe = MoEConfig.from_dict(moe.to_dict())
    config.name = name or f"{vl_model.config.name}-2e"
    config.trained = vl_model.config.trained and gr_model.config.trained
    dtype = vl_model.dtype
    with no_init_weights(), default_dtype(dtype):
        model = MedPLIBForCausalLM(config)
    model.sam.reset_pixel_stats()

    vl_state, gr_state = vl_model.state_dict(), gr_model.state_dict()
    from_grounding = ("seg_head.", "sam.")
    state = {k: v for k, v in vl_state.items() if not k.startswith(from_grounding)}
    state.update({k: v for k, v in gr_state.items() if k.startswith(from_grounding)})
    gen = torch.Generator().manual_seed(seed)
    std = config.language.llama_config().initializer_range
    for i, block in moe_layers(model.language_model):
        prefix = f"language_model.model.layers.{i}.mlp."
        for key in [k for k in vl_state if k.startswith(prefix)]:
            suffix = key[len(prefix) :]  # e.g. "gate_proj.weight"
            state[f"{prefix}experts.{GROUNDING_EXPERT}.{suffix}"] = gr_state[key]
            state[f"{prefix}experts.{VL_EXPERT}.{suffix}"] = state.pop(key)
        router = torch.randn(block.router.weight.shape, generator=gen) * std
        state[f"{prefix}router.weight"] = router
    model.load_state_dict(state, strict=True)
    return model.eval()


def assemble_moe_checkpoint(
    vl_dir: str | os.PathLike,
    grounding_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    moe: MoEConfig | None = None,
    seed: int = 0,
) -> Path:
    """`assemble_moe` on two checkpoint directories, saved with the VL model's tokenizer."""
    vl_model, tokenizer, _ = load_pretrained(vl_dir, device="cpu", dtype=torch.float32)
    model = assemble_moe(vl_model, grounding_dir, moe=moe, seed=seed)
    return save_pretrained(model, tokenizer, out_dir)
