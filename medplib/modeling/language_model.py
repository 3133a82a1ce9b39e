"""The LLaMA language model, with selected decoder FFNs replaced by MoE modules.

Built on transformers' `LlamaForCausalLM`, so attention, RoPE and KV caching are the
library's. Only `layer.mlp` changes: a `MoEFeedForward` for the layers listed in `MoEConfig`
(none when `num_experts == 1`, i.e. a plain dense LLaMA).
"""

from __future__ import annotations

from torch import nn
from transformers import LlamaForCausalLM

from medplib.modeling.configuration import LanguageModelConfig, MoEConfig
from medplib.modeling.moe import MoEFeedForward
from medplib.modeling.outputs import LayerRouting


def build_language_model(config: LanguageModelConfig, moe: MoEConfig) -> LlamaForCausalLM:
    llama_config = config.llama_config()
    lm = LlamaForCausalLM(llama_config)
    std = llama_config.initializer_range
    for i in moe.layer_indices(llama_config.num_hidden_layers):
        layer = lm.model.layers[i]
        block = MoEFeedForward(llama_config, moe)
        for module in block.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
        layer.mlp = block
    return lm


def moe_layers(lm: LlamaForCausalLM) -> list[tuple[int, MoEFeedForward]]:
    return [
        (i, layer.mlp)
        for i, layer in enumerate(lm.model.layers)
        if isinstance(layer.mlp, MoEFeedForward)
    ]


def collect_routing(lm: LlamaForCausalLM) -> list[LayerRouting]:
    """Routing of every MoE layer in the last forward call (empty for a dense model)."""
    found = []
    for i, block in moe_layers(lm):
        rec = block.last_routing
        if rec is not None:
            found.append(
                LayerRouting(i, rec.expert_index, rec.router_probs, rec.kept, rec.aux_loss)
            )
    return found
