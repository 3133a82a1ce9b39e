"""Key tables from the published MedPLIB checkpoint layout to this project's layout.

The tables are data: ``(official prefix, our prefix)`` pairs tried in order, first match wins;
a rule that does not end in ``.`` names one whole tensor and must match exactly.
``{i}`` stands for a decoder-layer index and ``{e}`` for an expert index; whatever follows the
prefix (``weight``, ``bias``, ``0.weight`` …) is kept unchanged. Official names are those of
``MedPLIBForCausalLM`` in the MedPLIB release (LLaVA-style ``model.*`` wrapper with a
DeepSpeed ``MoE`` in every FFN, SAM-Med2D at ``model.visual_model``, the ``[SEG]`` projector
``model.text_hidden_fcs`` as a one-element ModuleList of a Sequential).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

PrefixTable = Sequence[tuple[str, str]]

# The merged stage-IV checkpoint (`Huangxs/MedPLIB-7b-2e` and the merge scripts' output).
OFFICIAL_TO_OURS: PrefixTable = (
    # MoE FFN: DeepSpeed's TopKGate `wg` and its expert list (most specific rules first).
    ("model.layers.{i}.mlp.deepspeed_moe.gate.wg.", "language_model.model.layers.{i}.mlp.router."),
    (
        "model.layers.{i}.mlp.deepspeed_moe.experts.deepspeed_experts.{e}.",
        "language_model.model.layers.{i}.mlp.experts.{e}.",
    ),
    # Everything else in a decoder layer (attention, norms, or a dense stage-II/III FFN).
    ("model.layers.{i}.", "language_model.model.layers.{i}."),
    ("model.embed_tokens.", "language_model.model.embed_tokens."),
    ("model.norm.", "language_model.model.norm."),
    ("lm_head.", "language_model.lm_head."),
    # LLaVA's `linear` projector is a bare Linear (`model.mm_projector.weight`); ours is a
    # one-element Sequential. These exact names must precede the `mlp2x_gelu` prefix rule.
    ("model.mm_projector.weight", "projector.net.0.weight"),
    ("model.mm_projector.bias", "projector.net.0.bias"),
    # LLaVA projector `mlp2x_gelu` = Sequential(Linear, GELU, Linear): indices 0 and 2 match ours.
    ("model.mm_projector.", "projector.net."),
    ("model.region_fea_adapter.", "region_encoder.adapter."),
    # LLaVA's CLIPVisionTower wraps a transformers CLIPVisionModel as `.vision_tower`.
    ("model.vision_tower.vision_tower.vision_model.", "vision_tower.clip.vision_model."),
    ("model.visual_model.", "sam."),
    # ModuleList([Sequential(Linear, ReLU, Linear, Dropout)]) → our Sequential of the same order.
    ("model.text_hidden_fcs.0.", "seg_head.net."),
)

# A separate CLIP checkpoint: transformers `CLIPVisionModel` (or a full `CLIPModel`).
CLIP_TO_OURS: PrefixTable = (("vision_model.", "vision_tower.clip.vision_model."),)

# `sam-med2d_b.pth`: checkpoint["model"] of SAM-Med2D-B.
SAM_TO_OURS: PrefixTable = (
    ("image_encoder.", "sam.image_encoder."),
    ("prompt_encoder.", "sam.prompt_encoder."),
    ("mask_decoder.", "sam.mask_decoder."),
)

# Tensors that carry no learned information and are recomputed by the model; dropped silently
# apart from a count in the report. Older transformers stored these as persistent buffers.
IGNORED_OFFICIAL: tuple[str, ...] = (
    r"\.rotary_emb\.inv_freq$",
    r"\.position_ids$",
)
# The text half of a full CLIPModel and its contrastive heads are unused by MedPLIB.
IGNORED_CLIP: tuple[str, ...] = (
    r"^text_model\.",
    r"^text_projection\.",
    r"^visual_projection\.",
    r"^logit_scale$",
    r"\.position_ids$",
)
IGNORED_SAM: tuple[str, ...] = ()


@cache
def _compile(prefix: str) -> re.Pattern[str]:
    pattern = re.escape(prefix).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{e\}", r"(?P<e>\d+)")
    # A rule not ending in "." names one whole tensor: match it exactly, not as a prefix.
    return re.compile(pattern if prefix.endswith(".") else pattern + "$")


def rename(key: str, table: PrefixTable) -> str | None:
    """Our name for `key` by the first matching rule of `table`, or None when no rule matches."""
    for official, ours in table:
        m = _compile(official).match(key)
        if m:
            return ours.format(**m.groupdict()) + key[m.end() :]
    return None


def is_ignored(key: str, patterns: Sequence[str]) -> bool:
    return any(re.search(p, key) for p in patterns)


def component_of(our_key: str) -> str:
    """Readable component name of one of our keys, for grouping missing weights in messages."""
    for prefix, name in (
        ("vision_tower.", "CLIP vision tower"),
        ("sam.", "SAM-Med2D"),
        ("projector.", "projector"),
        ("region_encoder.", "region adapter"),
        ("seg_head.", "[SEG] head"),
        ("language_model.", "LLaMA"),
    ):
        if our_key.startswith(prefix):
            return name
    return "other"
