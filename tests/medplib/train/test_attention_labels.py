"""Attention labels: targets from the question, the head's attention, the loss, and a stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import stage_dict
from transformers import LlamaConfig, LlamaModel

from medplib.errors import UserInputError
from medplib.tokenization import IGNORE_INDEX, IMAGE_SENTINEL
from medplib.train import config_from_dict, run_stage
from medplib.train.attention_labels import (
    answer_query_positions,
    attention_label_loss,
    attention_target,
    head_attention_logprobs,
    named_columns,
)
from medplib.train.logbook import read_metrics

NAMES = ["kidney", "left kidney", "right kidney", "liver", "polyp"]


def test_named_columns_take_the_longest_whole_word_names_present():
    present = [True] * 5
    assert named_columns("Is the left kidney on the left or right side?", NAMES, present) == [1]
    assert named_columns("Which is larger, the Liver or the right kidney?", NAMES, present) == [
        2,
        3,
    ]
    assert named_columns("Is there a kidney here?", NAMES, present) == [0]
    assert named_columns("Are there polyps?", NAMES, present) == []  # whole words only
    # A structure the image does not hold gives no target ("Is there a polyp?" → "No").
    absent = [True, True, True, True, False]
    assert named_columns("Is there a polyp in this image?", NAMES, absent) == []
    assert named_columns("Describe the image.", NAMES, present) == []


def test_attention_target_spreads_over_the_named_coverage():
    coverage = np.array([[1.0, 0.0], [0.5, 0.0], [0.0, 1.0], [0.5, 0.5]], np.float32)  # (N 4, K 2)
    np.testing.assert_allclose(attention_target(coverage, [0]), [0.5, 0.25, 0.0, 0.25])
    np.testing.assert_allclose(
        attention_target(coverage, [0, 1]), [2 / 7, 1 / 7, 2 / 7, 2 / 7], rtol=1e-6
    )
    assert not attention_target(coverage, []).any()
    assert not attention_target(np.zeros((4, 2), np.float32), [1]).any()


def test_answer_query_position_is_just_before_the_first_answer_token():
    x = IGNORE_INDEX
    labels = torch.tensor([[x, x, x, 7, 8, x], [x, 5, x, 6, x, x], [x, x, x, x, x, x]])
    assert answer_query_positions(labels).tolist() == [2, 0, -1]


def _capture_attention(model: LlamaModel, layer: int, embeds: torch.Tensor):
    seen = {}
    hook = model.layers[layer].self_attn.register_forward_pre_hook(
        lambda _m, _a, kw: seen.update(inputs=(kw["hidden_states"], kw["position_embeddings"])),
        with_kwargs=True,
    )
    try:
        out = model(inputs_embeds=embeds, output_attentions=True)
    finally:
        hook.remove()
    return seen["inputs"], out.attentions[layer]  # attentions: (B, H, L, L)


def test_head_logprobs_match_the_models_own_attention_weights():
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped: heads 2 and 3 share key head 1
        vocab_size=10,
        attn_implementation="eager",
    )
    model = LlamaModel(config).eval()
    embeds = torch.randn(2, 9, 32)
    (hidden, rotary), weights = _capture_attention(model, 1, embeds)
    query = torch.tensor([5, 8])
    for head in (0, 3):
        logp = head_attention_logprobs(model.layers[1].self_attn, hidden, rotary, query, head)
        for b, q in enumerate(query.tolist()):
            expected = weights[b, head, q]  # (L,), zero after the query
            torch.testing.assert_close(logp[b].exp(), expected, atol=1e-6, rtol=1e-5)
            assert torch.isinf(logp[b, q + 1 :]).all()


def test_loss_prefers_attention_on_the_target_and_skips_rows_without_one():
    s = IMAGE_SENTINEL
    token_ids = torch.tensor([[1, s, s, s, 4, 5], [1, s, s, s, 4, 5]])  # N = 3 visual tokens
    targets = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    on_target = torch.log(torch.tensor([[0.05, 0.05, 0.8, 0.05, 0.05, 0.0]] * 2))
    elsewhere = torch.log(torch.tensor([[0.05, 0.8, 0.05, 0.05, 0.05, 0.0]] * 2))
    good = attention_label_loss(on_target, token_ids, targets)
    bad = attention_label_loss(elsewhere, token_ids, targets)
    assert float(good) == pytest.approx(-np.log(0.8), rel=1e-6)
    assert float(bad) == pytest.approx(-np.log(0.05), rel=1e-6)
    # The second row has no target: it changes nothing, whatever it attends to.
    other = on_target.clone()
    other[1] = torch.log(torch.tensor([0.5, 0.1, 0.1, 0.1, 0.2, 0.0]))
    assert float(attention_label_loss(other, token_ids, targets)) == pytest.approx(float(good))
    assert float(attention_label_loss(on_target, token_ids, torch.zeros(2, 3))) == 0.0
    # A sample without an answer has no query that sees the image (-inf there): not counted.
    unseen = on_target.clone()
    unseen[1] = torch.log(torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    both = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    assert float(attention_label_loss(unseen, token_ids, both)) == pytest.approx(float(good))


def test_config_checks_and_fingerprint():
    off = config_from_dict(stage_dict("vl"))
    off_elsewhere = config_from_dict(stage_dict("vl", attention_labels={"weight": 0, "layer": 3}))
    on = config_from_dict(stage_dict("vl", attention_labels={"weight": 1.0}))
    # Left out while off (runs made before the option keep their fingerprint), in when on.
    assert off_elsewhere.fingerprint() == off.fingerprint() != on.fingerprint()
    with pytest.raises(UserInputError, match="attention_labels.weight"):
        config_from_dict(stage_dict("vl", attention_labels={"weight": -1.0})).validate()


def test_a_head_the_model_lacks_is_refused_before_anything_is_written(
    corpus: Path, align_dir: Path, tmp_path: Path
):
    cfg = config_from_dict(stage_dict("vl", attention_labels={"weight": 1.0, "layer": 9}))
    with pytest.raises(UserInputError, match="layer 9, head 0"):
        run_stage(cfg, corpus, tmp_path / "vl", init_dir=align_dir, progress=False)
    assert not (tmp_path / "vl").exists()


def test_vl_stage_learns_to_attend_to_the_named_structure(
    corpus: Path, align_dir: Path, tmp_path: Path
):
    cfg = config_from_dict(
        stage_dict(
            "vl",
            steps=20,
            attention_labels={"weight": 1.0, "layer": 1, "head": 2},
            data={"tasks": {"vqa": 1.0}, "max_records": 8, "val_records": 4},
        )
    )
    run_stage(cfg, corpus, tmp_path / "vl", init_dir=align_dir, progress=False)
    rows = [r for r in read_metrics(tmp_path / "vl" / "metrics.jsonl") if r["kind"] == "train"]
    attn = [r["attn"] for r in rows if "attn" in r]
    assert len(attn) == len(rows)
    # Starting near uniform over ~100 keys (log 100 ≈ 4.6), it learns to look at the patches.
    assert attn[0] > 2.0 and np.mean(attn[-4:]) < 0.75 * np.mean(attn[:4]), [
        round(a, 2) for a in attn
    ]
