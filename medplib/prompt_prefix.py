"""The shared start of every prompt about one image, run through the language model once.

Every prompt about an image begins with the same positions: the system prompt, then the
image's visual tokens, which are most of the prompt. A predictor asked several questions about
one image, or checking one answer with teacher-forced passes and a grounding question, would
otherwise recompute them each time. The first answer's prefill keeps their keys and values
(`take_prefix`, or `encode_prefix` on their own); `generate` (`medplib.generation`) and
`prefix_forward` then read only the positions after them.

Exact up to float rounding: attention is causal, so the prefix's keys and values do not depend
on what follows it, and top-1 routing decides per token. The one exception is an MoE that can
drop tokens at inference (an expert capacity below the token count), where a token's fate
depends on the others in the same forward call; `reusable` says whether a model is free of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from medplib.modeling.configuration import MoEConfig
from medplib.modeling.language_model import collect_routing
from medplib.modeling.medplib import MedPLIBForCausalLM
from medplib.modeling.outputs import LayerRouting


@dataclass(frozen=True)
class PromptPrefix:
    """Keys, values and routing of a prompt's first `length` positions (see `encode_prefix`).

    Never changed after it is made: each use copies it into a fresh cache, so any number of
    prompts that start with these positions can be read after it.
    """

    keys_values: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per layer, (1, H, P, d) each
    routing: tuple[LayerRouting, ...]  # MoE routing over the P positions
    length: int  # P

    def cache(self, model: MedPLIBForCausalLM, batch: int = 1) -> DynamicCache:
        """A fresh cache holding this prefix once per row of a `batch`, ready to be extended."""
        cache = DynamicCache(config=model.language_model.config)
        for layer, (k, v) in enumerate(self.keys_values):
            cache.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1), layer)
        return cache


def reusable(moe: MoEConfig) -> bool:
    """Whether a prefix computed alone gives what the whole prompt would: true unless an
    expert's inference capacity, ceil(tokens / experts * factor), can fall below the token
    count and drop tokens depending on which others share the forward call."""
    return not moe.is_moe or moe.eval_capacity_factor >= moe.num_experts


def join_routing(prefix: PromptPrefix | None, rest: list[LayerRouting]) -> list[LayerRouting]:
    """Routing over prefix + rest, as one forward call over the whole prompt reports it."""
    if prefix is None or not prefix.routing:
        return rest
    return [
        LayerRouting(
            r.layer,
            torch.cat([p.expert_index, r.expert_index], dim=1),  # (1, P + S)
            torch.cat([p.router_probs, r.router_probs], dim=1),  # (1, P + S, E)
            torch.cat([p.kept, r.kept], dim=1),  # (1, P + S)
            r.aux_loss,
        )
        for p, r in zip(prefix.routing, rest, strict=True)
    ]


def take_prefix(cache: DynamicCache, routing: list[LayerRouting], length: int) -> PromptPrefix:
    """The first `length` positions of a filled `cache` and of its forward call's `routing`.

    Slices, not copies: a cache's later updates concatenate into new tensors, so these stay
    as they are.
    """
    if length <= 0 or length > cache.get_seq_length():
        raise ValueError(f"length must be in 1..{cache.get_seq_length()}, got {length}")
    keys_values = tuple(
        (k[..., :length, :], v[..., :length, :]) for k, v in map(_keys_values, cache.layers)
    )
    heads = tuple(
        LayerRouting(
            r.layer,
            r.expert_index[:, :length],
            r.router_probs[:, :length],
            r.kept[:, :length],
            r.aux_loss,
        )
        for r in routing
    )
    return PromptPrefix(keys_values, heads, length)


@torch.no_grad()
def encode_prefix(model: MedPLIBForCausalLM, prefix_embeds: torch.Tensor) -> PromptPrefix:
    """Run the language model over the (1, P, D) start of a prompt and keep what later
    positions read of it."""
    if prefix_embeds.dim() != 3 or prefix_embeds.shape[0] != 1 or prefix_embeds.shape[1] == 0:
        raise ValueError(
            f"prefix_embeds must be (1, P, D), P > 0, got {tuple(prefix_embeds.shape)}"
        )
    lm = model.language_model
    cache = DynamicCache(config=lm.config)
    lm.model(inputs_embeds=prefix_embeds, cache=cache, use_cache=True)
    return take_prefix(cache, collect_routing(lm), int(prefix_embeds.shape[1]))


def _keys_values(layer: object) -> tuple[torch.Tensor, torch.Tensor]:
    # LLaMA's full attention fills plain dynamic layers; anything else would need its own copy.
    if not isinstance(layer, DynamicLayer) or layer.keys is None or layer.values is None:
        raise TypeError(f"cannot keep a prompt prefix from a {type(layer).__name__}")
    return layer.keys, layer.values


@torch.no_grad()
def prefix_forward(
    model: MedPLIBForCausalLM, rest_embeds: torch.Tensor, prefix: PromptPrefix | None = None
) -> torch.Tensor:
    """Last-layer hidden states (B, S, D) of the (B, S, D) positions after `prefix` (of the
    whole prompts, without one); every row continues the same prefix."""
    lm = model.language_model
    if prefix is None:
        return lm.model(inputs_embeds=rest_embeds, use_cache=False).last_hidden_state
    cache = prefix.cache(model, batch=rest_embeds.shape[0])
    return lm.model(inputs_embeds=rest_embeds, cache=cache, use_cache=True).last_hidden_state


class PrefixStore:
    """The last `size` prefixes made, found again by the image tensor they were made from and
    the token ids before it.

    Two by default: an image and its left-right mirror, which the side check asks about in
    turn. The image tensor is held, so its identity cannot be taken by a new one.
    """

    def __init__(self, size: int = 2) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self.size = size
        self._entries: list[tuple[torch.Tensor, tuple[int, ...], PromptPrefix]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, image: torch.Tensor, ids: tuple[int, ...]) -> PromptPrefix | None:
        """The prefix stored for (`image`, `ids`), or None."""
        for n, (held, held_ids, prefix) in enumerate(self._entries):
            if held is image and held_ids == ids:
                self._entries.append(self._entries.pop(n))  # most recent last
                return prefix
        return None

    def put(self, image: torch.Tensor, ids: tuple[int, ...], prefix: PromptPrefix) -> None:
        """Store `prefix` for (`image`, `ids`) in place of the oldest."""
        kept = [e for e in self._entries if not (e[0] is image and e[1] == ids)]
        self._entries = [*kept[max(0, len(kept) - self.size + 1) :], (image, ids, prefix)]

    def get(
        self, image: torch.Tensor, ids: tuple[int, ...], make: Callable[[], PromptPrefix]
    ) -> PromptPrefix:
        """The prefix stored for (`image`, `ids`), or `make()`'s, stored."""
        found = self.find(image, ids)
        if found is None:
            found = make()
            self.put(image, ids, found)
        return found

    def clear(self) -> None:
        self._entries = []
