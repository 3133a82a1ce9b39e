"""A prompt's start run once and reused: the same hidden states, tokens and routing as the
whole prompt run at once."""

from __future__ import annotations

import pytest
import torch
from lm_helpers import prompt_embeds

from medplib.generation import generate
from medplib.modeling.configuration import MoEConfig
from medplib.prompt_prefix import (
    PrefixStore,
    encode_prefix,
    join_routing,
    prefix_forward,
    reusable,
)
from medplib.tokenization import IMAGE_SENTINEL


def _prompt(model, tokenizer):
    """(embeds (1, L, D), P): the prompt and the length of its start up to the last visual token."""
    embeds, token_ids = prompt_embeds(model, tokenizer)
    image = torch.nonzero(token_ids[0] == IMAGE_SENTINEL).flatten()
    return embeds, int(image[-1]) + 1


@torch.no_grad()
def test_the_rest_of_a_prompt_reads_the_prefix_as_the_whole_prompt_would(
    tiny_model, tiny_tokenizer
):
    embeds, p = _prompt(tiny_model, tiny_tokenizer)
    assert 0 < p < embeds.shape[1]
    whole = tiny_model.language_model.model(inputs_embeds=embeds).last_hidden_state  # (1, L, D)
    prefix = encode_prefix(tiny_model, embeds[:, :p])
    rest = prefix_forward(tiny_model, embeds[:, p:], prefix)
    assert prefix.length == p and rest.shape == (1, embeds.shape[1] - p, embeds.shape[2])
    torch.testing.assert_close(rest, whole[:, p:], rtol=1e-4, atol=1e-5)
    # Without a prefix it is the plain forward pass.
    torch.testing.assert_close(prefix_forward(tiny_model, embeds), whole)


@torch.no_grad()
def test_a_prefix_serves_many_continuations_unchanged(tiny_model, tiny_tokenizer):
    embeds, p = _prompt(tiny_model, tiny_tokenizer)
    prefix = encode_prefix(tiny_model, embeds[:, :p])
    before = [k.clone() for k, _ in prefix.keys_values]
    first = prefix_forward(tiny_model, embeds[:, p:], prefix)
    generate(tiny_model, embeds[:, p:], max_new_tokens=5, prefix=prefix)
    again = prefix_forward(tiny_model, embeds[:, p:], prefix)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    for b, (k, _) in zip(before, prefix.keys_values, strict=True):
        assert k.shape[-2] == p
        torch.testing.assert_close(b, k, rtol=0, atol=0)


@torch.no_grad()
def test_decoding_after_a_prefix_equals_decoding_the_whole_prompt(tiny_model, tiny_tokenizer):
    embeds, p = _prompt(tiny_model, tiny_tokenizer)
    whole = generate(tiny_model, embeds, max_new_tokens=10)
    split = generate(
        tiny_model,
        embeds[:, p:],
        max_new_tokens=10,
        prefix=encode_prefix(tiny_model, embeds[:, :p]),
    )
    assert split.token_ids == whole.token_ids and len(split.token_ids) == 10
    assert split.token_experts == whole.token_experts
    torch.testing.assert_close(
        split.predicting_hidden, whole.predicting_hidden, rtol=1e-4, atol=1e-5
    )
    # The prompt routing covers the prefix too, as one call over the whole prompt reports it.
    assert len(split.prompt_routing) == len(whole.prompt_routing) > 0
    for s, w in zip(split.prompt_routing, whole.prompt_routing, strict=True):
        assert s.layer == w.layer
        assert s.expert_index.shape == w.expert_index.shape == (1, embeds.shape[1])
        assert torch.equal(s.expert_index, w.expert_index)
        assert torch.equal(s.kept, w.kept)
        torch.testing.assert_close(s.router_probs, w.router_probs, rtol=1e-4, atol=1e-5)


def test_a_prefix_needs_the_cache(tiny_model, tiny_tokenizer):
    embeds, p = _prompt(tiny_model, tiny_tokenizer)
    prefix = encode_prefix(tiny_model, embeds[:, :p])
    with pytest.raises(ValueError, match="use_cache"):
        generate(tiny_model, embeds[:, p:], max_new_tokens=2, use_cache=False, prefix=prefix)
    with pytest.raises(ValueError, match=r"\(1, P, D\)"):
        encode_prefix(tiny_model, embeds[:, :0])
    # The whole prompt as the prefix leaves nothing to predict the first token from.
    whole = encode_prefix(tiny_model, embeds)
    with pytest.raises(ValueError, match=r"L > 0"):
        generate(tiny_model, embeds[:, embeds.shape[1] :], max_new_tokens=2, prefix=whole)


def test_join_routing_without_a_prefix_is_the_rest(tiny_model, tiny_tokenizer):
    embeds, _ = _prompt(tiny_model, tiny_tokenizer)
    rest = generate(tiny_model, embeds, max_new_tokens=1).prompt_routing
    assert join_routing(None, rest) is rest


@pytest.mark.parametrize(
    ("experts", "factor", "expected"),
    [(1, 0.5, True), (2, 2.0, True), (2, 3.0, True), (2, 1.5, False), (4, 2.0, False)],
)
def test_reusable_only_where_no_token_can_be_dropped(experts, factor, expected):
    moe = MoEConfig(num_experts=experts, eval_capacity_factor=factor)
    assert reusable(moe) is expected
    # The rule behind it: capacity for any token count reaches that count.
    if moe.is_moe:
        assert all(moe.capacity(n, training=False) >= n for n in range(1, 300)) is expected


def _fake_prefix(n: int):
    from medplib.prompt_prefix import PromptPrefix

    return PromptPrefix((), (), n)


def test_the_store_finds_a_prefix_by_image_identity_and_ids():
    store = PrefixStore(size=2)
    a, b, c = torch.zeros(3), torch.zeros(3), torch.zeros(3)
    made: list[int] = []

    def make(n):
        def _make():
            made.append(n)
            return _fake_prefix(n)

        return _make

    assert store.get(a, (1, 2), make(1)).length == 1
    assert store.get(a, (1, 2), make(99)).length == 1  # found again: not made
    # An equal tensor that is another object is another image; other ids are another prompt.
    assert store.get(b, (1, 2), make(2)).length == 2
    assert store.get(a, (1, 3), make(3)).length == 3  # evicts the oldest, (a, (1, 2))
    assert made == [1, 2, 3] and len(store) == 2
    assert store.get(a, (1, 2), make(4)).length == 4
    assert store.get(a, (1, 3), make(98)).length == 3  # (b, (1, 2)) was the oldest: it went
    store.clear()
    assert len(store) == 0
    assert store.get(c, (1,), make(5)).length == 5
    with pytest.raises(ValueError, match="at least 1"):
        PrefixStore(size=0)


@torch.no_grad()
def test_a_decode_keeps_the_start_it_ran_as_a_prefix(tiny_model, tiny_tokenizer):
    embeds, p = _prompt(tiny_model, tiny_tokenizer)
    whole = generate(tiny_model, embeds, max_new_tokens=6, keep_prefix=p)
    alone = encode_prefix(tiny_model, embeds[:, :p])
    kept = whole.kept_prefix
    assert kept is not None and kept.length == p
    for (k, v), (k2, v2) in zip(kept.keys_values, alone.keys_values, strict=True):
        assert k.shape[-2] == v.shape[-2] == p  # the decode's own tokens are not in it
        torch.testing.assert_close(k, k2, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(v, v2, rtol=1e-4, atol=1e-5)
    for r, r2 in zip(kept.routing, alone.routing, strict=True):
        assert torch.equal(r.expert_index, r2.expert_index) and r.expert_index.shape == (1, p)
    # The next prompt about the image reads it as the decode would have.
    again = generate(tiny_model, embeds[:, p:], max_new_tokens=6, prefix=kept)
    assert again.token_ids == whole.token_ids
    assert generate(tiny_model, embeds, max_new_tokens=1).kept_prefix is None


def test_keep_prefix_must_lie_within_the_prompt(tiny_model, tiny_tokenizer):
    embeds, p = _prompt(tiny_model, tiny_tokenizer)
    for bad in (-1, embeds.shape[1] + 1):
        with pytest.raises(ValueError, match="keep_prefix"):
            generate(tiny_model, embeds, max_new_tokens=1, keep_prefix=bad)
    prefix = encode_prefix(tiny_model, embeds[:, :p])
    with pytest.raises(ValueError, match="keep_prefix"):
        generate(tiny_model, embeds[:, p:], max_new_tokens=1, prefix=prefix, keep_prefix=2)
    with pytest.raises(ValueError, match="use_cache"):
        generate(tiny_model, embeds, max_new_tokens=1, use_cache=False, keep_prefix=p)


def test_the_store_keeps_its_newest_entries():
    store = PrefixStore(size=3)
    images = [torch.zeros(1) for _ in range(4)]
    for n, image in enumerate(images):
        store.put(image, (n,), _fake_prefix(n))
    assert len(store) == 3
    assert store.find(images[0], (0,)) is None  # the oldest went
    assert [store.find(im, (n,)).length for n, im in enumerate(images) if n] == [1, 2, 3]
    # Putting an entry again replaces it rather than holding it twice.
    store.put(images[3], (3,), _fake_prefix(30))
    assert len(store) == 3 and store.find(images[3], (3,)).length == 30
    assert store.find(images[3], (4,)) is None
