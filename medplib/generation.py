"""Autoregressive decoding for MedPLIB from prompt embeddings (visual tokens already spliced in).

Greedy by default; temperature + nucleus (top-p) sampling on request. Keeps keys and values in
a transformers `DynamicCache`; `use_cache=False` recomputes the whole sequence each step and
serves as the reference the cached path is tested against. Besides tokens it returns, for every
generated token, the last-layer hidden state that predicted it (the `<SEG>` mask prompt) and
the MoE routing.
Given a `PromptPrefix` (`medplib.prompt_prefix`), it reads only the rest of the prompt; asked
to keep one, it returns the start of the prompt it ran, for the next prompt about the image.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from medplib.errors import UserInputError
from medplib.modeling.language_model import collect_routing
from medplib.modeling.medplib import MedPLIBForCausalLM
from medplib.modeling.outputs import LayerRouting
from medplib.prompt_prefix import PromptPrefix, join_routing, take_prefix

GREEDY_BELOW = 1e-5  # temperatures below this mean greedy decoding


@dataclass
class GenerationResult:
    token_ids: list[int]  # generated ids, including the stop token when one ended decoding
    predicting_hidden: torch.Tensor  # (n, D): hidden state that predicted each generated token
    finish_reason: str  # "stop" (stop token), "stop_string" (stop_fn), or "length"
    prompt_routing: list[LayerRouting] = field(
        default_factory=list
    )  # routing over the prompt (B=1)
    token_experts: list[list[int]] = field(
        default_factory=list
    )  # [token][moe layer] expert that predicted it
    prefill_s: float = 0.0
    decode_s: float = 0.0
    # The prompt's first `keep_prefix` positions, where `generate` was asked to keep them.
    kept_prefix: PromptPrefix | None = None


@dataclass
class ContextFit:
    """A conversation cut to fit the context window (see `fit_to_context`)."""

    turns: list[Any]  # the turns kept, oldest first
    ids: list[int]  # their token ids (with sentinels)
    max_new_tokens: int  # possibly reduced answer budget
    dropped_turns: int  # how many of the oldest turns were left out
    warnings: list[str] = field(default_factory=list)


def fit_to_context(
    turns: Sequence[Any],
    encode: Callable[[Sequence[Any]], list[int]],
    *,
    extra_tokens: int,
    context_length: int,
    max_new_tokens: int,
) -> ContextFit:
    """Drop the oldest turns until prompt + answer fit `context_length` positions.

    `encode(turns)` gives the prompt ids; `extra_tokens` is what the model adds on top (the
    visual tokens replacing the image placeholder). The image stays with the first kept turn.
    If the last turn alone is too long, the answer budget shrinks; if even that is not enough,
    a UserInputError asks for a shorter question.
    """
    kept = list(turns)
    notes: list[str] = []
    while True:
        ids = encode(kept)
        length = len(ids) + extra_tokens
        if length + max_new_tokens <= context_length:
            return ContextFit(kept, ids, max_new_tokens, len(turns) - len(kept), notes)
        if len(kept) > 1:
            kept = kept[1:]
            notes.append(
                "The conversation was too long for the model; the oldest turn was left out."
            )
            continue
        if length < context_length:
            budget = context_length - length
            notes.append(
                f"The answer was limited to {budget} tokens to fit the model's context window."
            )
            return ContextFit(kept, ids, budget, len(turns) - len(kept), notes)
        raise UserInputError(
            f"The question needs {length} tokens with the image but the model reads at most "
            f"{context_length}; shorten it."
        )


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability mass reaches `top_p`; others → -inf.

    logits (..., V). The most likely token always survives; top_p >= 1 returns logits unchanged.
    """
    if top_p >= 1.0:
        return logits
    if top_p <= 0.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of strictly more likely tokens
    drop_sorted = mass_before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def choose_token(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> int:
    """(V,) logits → next token id: argmax when temperature ≈ 0, else nucleus sampling."""
    logits = logits.float()
    if temperature < GREEDY_BELOW:
        return int(torch.argmax(logits))
    filtered = top_p_filter(logits / temperature, top_p)
    probs = filtered.softmax(dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def _experts_at(routing: list[LayerRouting], position: int) -> list[int]:
    return [int(r.expert_index[0, position]) for r in routing]


@torch.no_grad()
def generate(
    model: MedPLIBForCausalLM,
    inputs_embeds: torch.Tensor,
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop_token_ids: Collection[int] = (),
    stop_fn: Callable[[list[int]], bool] | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    on_token: Callable[[int, int], None] | None = None,
    prefix: PromptPrefix | None = None,
    keep_prefix: int = 0,
) -> GenerationResult:
    """Decode up to `max_new_tokens` after the (1, L, D) prompt embeddings.

    Stops after a token in `stop_token_ids` or once `stop_fn(generated_ids)` is true.
    `on_token(step, token_id)` is called after every generated token (progress reporting).
    With `prefix`, `inputs_embeds` is the rest of the prompt after it; the prompt routing
    then covers both. With `keep_prefix` > 0, the result's `kept_prefix` holds the prompt's
    first `keep_prefix` positions as the prefill computed them.
    """
    if inputs_embeds.dim() != 3 or inputs_embeds.shape[0] != 1 or inputs_embeds.shape[1] == 0:
        # After a prefix too, the last prompt position must be here: it predicts the first token.
        raise ValueError(
            f"inputs_embeds must be (1, L, D), L > 0, got {tuple(inputs_embeds.shape)}"
        )
    if (prefix is not None or keep_prefix) and not use_cache:
        raise ValueError("a prompt prefix needs use_cache=True")
    if keep_prefix and (prefix is not None or not 0 < keep_prefix <= inputs_embeds.shape[1]):
        raise ValueError(
            f"keep_prefix must be within the prompt's {inputs_embeds.shape[1]} positions and "
            f"come without a prefix, got {keep_prefix}"
        )
    lm = model.language_model
    embed = lm.get_input_embeddings()
    stops = {int(t) for t in stop_token_ids}
    tokens: list[int] = []
    hiddens: list[torch.Tensor] = []
    experts: list[list[int]] = []
    finish = "length"

    t0 = time.perf_counter()
    # The cache is filled in place by every forward call it is passed to.
    if prefix is not None:
        cache: DynamicCache | None = prefix.cache(model)
    else:
        cache = DynamicCache(config=lm.config) if use_cache else None
    out = lm.model(inputs_embeds=inputs_embeds, cache=cache, use_cache=use_cache)
    step_routing = collect_routing(lm)
    prompt_routing = join_routing(prefix, step_routing)
    kept = (
        take_prefix(cache, step_routing, keep_prefix) if keep_prefix and cache is not None else None
    )
    h = out.last_hidden_state[0, -1]  # (D,)
    _sync(inputs_embeds.device)
    prefill_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    seq = inputs_embeds
    for step in range(max_new_tokens):
        logits = lm.lm_head(h)  # (V,)
        tok = choose_token(logits, temperature, top_p, generator)
        tokens.append(tok)
        hiddens.append(h)
        experts.append(_experts_at(step_routing, -1))
        if on_token is not None:
            on_token(step, tok)
        if tok in stops:
            finish = "stop"
            break
        if stop_fn is not None and stop_fn(tokens):
            finish = "stop_string"
            break
        if step == max_new_tokens - 1:
            break
        tok_emb = embed(torch.tensor([[tok]], device=inputs_embeds.device))  # (1, 1, D)
        if cache is not None:
            out = lm.model(inputs_embeds=tok_emb, cache=cache, use_cache=True)
        else:
            seq = torch.cat([seq, tok_emb.to(seq.dtype)], dim=1)
            out = lm.model(inputs_embeds=seq, use_cache=False)
        h = out.last_hidden_state[0, -1]
        step_routing = collect_routing(lm)
    _sync(inputs_embeds.device)
    decode_s = time.perf_counter() - t1
    hidden = (
        torch.stack(hiddens) if hiddens else inputs_embeds.new_zeros((0, inputs_embeds.shape[-1]))
    )
    return GenerationResult(
        tokens, hidden, finish, prompt_routing, experts, prefill_s, decode_s, kept
    )


def _sync(device: torch.device) -> None:
    # CUDA kernels run asynchronously: without waiting, a timer measures the launch only.
    if device.type == "cuda":
        torch.cuda.synchronize(device)
