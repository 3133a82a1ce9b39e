from __future__ import annotations

import math

import pytest
import torch
from lm_helpers import ScriptedHead, prompt_embeds

from medplib.generation import choose_token, generate, top_p_filter


def _prompt_embeds(model, tokenizer, question="Describe the image."):
    return prompt_embeds(model, tokenizer, question)[0]


@torch.no_grad()
def test_kv_cache_decoding_equals_full_recomputation(tiny_model, tiny_tokenizer):
    embeds = _prompt_embeds(tiny_model, tiny_tokenizer)
    cached = generate(tiny_model, embeds, max_new_tokens=12, use_cache=True)
    full = generate(tiny_model, embeds, max_new_tokens=12, use_cache=False)
    assert len(cached.token_ids) == 12 and cached.finish_reason == "length"
    assert cached.token_ids == full.token_ids
    assert cached.token_experts == full.token_experts
    torch.testing.assert_close(
        cached.predicting_hidden, full.predicting_hidden, rtol=1e-4, atol=1e-5
    )
    assert cached.predicting_hidden.shape == (12, tiny_model.config.language.hidden_size)
    # The first token is predicted by the last prompt position.
    last = tiny_model.language_model.model(inputs_embeds=embeds).last_hidden_state[0, -1]
    torch.testing.assert_close(cached.predicting_hidden[0], last, rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_sampled_decoding_is_seeded_and_cache_independent(tiny_model, tiny_tokenizer):
    embeds = _prompt_embeds(tiny_model, tiny_tokenizer)
    runs = [
        generate(
            tiny_model,
            embeds,
            max_new_tokens=8,
            temperature=1.5,
            top_p=0.9,
            use_cache=c,
            generator=torch.Generator().manual_seed(7),
        )
        for c in (True, False, True)
    ]
    assert runs[0].token_ids == runs[1].token_ids == runs[2].token_ids


def test_stop_token_and_stop_function(tiny_model, tiny_tokenizer):
    embeds = _prompt_embeds(tiny_model, tiny_tokenizer)
    v = len(tiny_tokenizer)
    tiny_model.language_model.lm_head = ScriptedHead([40, 41, 2, 42], v)
    res = generate(tiny_model, embeds, max_new_tokens=10, stop_token_ids=[2])
    assert res.token_ids == [40, 41, 2] and res.finish_reason == "stop"
    tiny_model.language_model.lm_head = ScriptedHead([40, 41, 2, 42], v)
    res = generate(tiny_model, embeds, max_new_tokens=10, stop_fn=lambda toks: toks[-1] == 41)
    assert res.token_ids == [40, 41] and res.finish_reason == "stop_string"


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([0.05, 0.5, 0.15, 0.3]))
    kept = lambda p: torch.isfinite(top_p_filter(logits, p)).nonzero().squeeze(-1).tolist()  # noqa: E731
    assert kept(0.5) == [1]
    assert kept(0.7) == [1, 3]
    assert kept(0.81) == [1, 2, 3]
    assert kept(1.0) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        top_p_filter(logits, 0.0)


def test_sampling_draws_only_from_the_nucleus():
    logits = torch.log(torch.tensor([0.05, 0.5, 0.15, 0.3]))
    gen = torch.Generator().manual_seed(0)
    nucleus = {choose_token(logits, 1.0, 0.7, gen) for _ in range(300)}
    assert nucleus == {1, 3}
    everything = {choose_token(logits, 1.0, 1.0, gen) for _ in range(300)}
    assert everything == {0, 1, 2, 3}
    assert choose_token(logits, 0.0) == 1


def test_temperature_sharpens_and_flattens():
    logits = torch.log(torch.tensor([0.2, 0.8]))
    gen = torch.Generator().manual_seed(1)
    cold = sum(choose_token(logits, 0.1, 1.0, gen) for _ in range(400)) / 400
    hot = sum(choose_token(logits, 10.0, 1.0, gen) for _ in range(400)) / 400
    p_cold = 1 / (1 + math.exp(-math.log(4) / 0.1))
    assert cold == pytest.approx(p_cold, abs=0.02)
    assert 0.45 < hot < 0.62  # 0.8 vs 0.2 at T=10 → p ≈ 0.535


def test_fit_to_context_drops_oldest_turns_then_shrinks_the_answer():
    from medplib.errors import UserInputError
    from medplib.generation import fit_to_context

    def encode(turns):
        return [7] * sum(len(t) for t in turns)

    turns = ["aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc"]
    fit = fit_to_context(turns, encode, extra_tokens=5, context_length=35, max_new_tokens=5)
    assert fit.turns == turns[1:] and fit.dropped_turns == 1 and fit.max_new_tokens == 5
    assert len(fit.ids) == 20 and len(fit.warnings) == 1
    fit = fit_to_context(turns, encode, extra_tokens=5, context_length=18, max_new_tokens=5)
    assert fit.turns == turns[2:] and fit.max_new_tokens == 3 and len(fit.warnings) == 3
    with pytest.raises(UserInputError, match="shorten it"):
        fit_to_context(turns, encode, extra_tokens=5, context_length=15, max_new_tokens=5)
