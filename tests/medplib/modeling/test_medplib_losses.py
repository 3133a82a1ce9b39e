from __future__ import annotations

import math

import pytest
import torch

from medplib.modeling.configuration import LossConfig
from medplib.modeling.losses import (
    causal_lm_loss,
    dice_loss,
    focal_loss,
    mask_bce_loss,
    mask_losses,
    total_loss,
)


def test_causal_lm_loss_uses_only_supervised_next_tokens():
    logits = torch.zeros(1, 4, 3)
    logits[0, 1, 2] = 5.0  # position 1 predicts token 2
    labels = torch.tensor([[-100, -100, 2, -100]])
    expected = -math.log(math.exp(5) / (math.exp(5) + 2))
    assert causal_lm_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_causal_lm_loss_without_targets_is_zero_with_grad():
    logits = torch.randn(1, 3, 5, requires_grad=True)
    loss = causal_lm_loss(logits, torch.full((1, 3), -100))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None


def _token_ce(logits: torch.Tensor, target: int) -> float:
    return -torch.log_softmax(logits, dim=-1)[target].item()


def test_sample_reduction_weighs_each_answer_once():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    # Sample 0 supervises one token (a yes/no answer), sample 1 three (a longer answer).
    labels = torch.tensor([[-100, -100, -100, -100, 3], [-100, 1, 4, 6, -100]])
    ce0 = _token_ce(logits[0, 3], 3)
    ce1 = [_token_ce(logits[1, 0], 1), _token_ce(logits[1, 1], 4), _token_ce(logits[1, 2], 6)]
    per_sample = (ce0 + sum(ce1) / 3) / 2
    per_token = (ce0 + sum(ce1)) / 4
    assert causal_lm_loss(logits, labels, "sample").item() == pytest.approx(per_sample, rel=1e-5)
    assert causal_lm_loss(logits, labels, "token").item() == pytest.approx(per_token, rel=1e-5)
    assert causal_lm_loss(logits, labels).item() == pytest.approx(per_token, rel=1e-5)


def test_sample_reduction_skips_sequences_without_answer_tokens():
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 5, requires_grad=True)
    labels = torch.tensor([[-100, -100, -100, -100], [-100, 2, 0, -100]])
    expected = (_token_ce(logits[1, 0].detach(), 2) + _token_ce(logits[1, 1].detach(), 0)) / 2
    loss = causal_lm_loss(logits, labels, "sample")
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert logits.grad is not None and logits.grad[0].abs().sum().item() == 0.0
    none = causal_lm_loss(logits, torch.full((2, 4), -100), "sample")
    assert none.item() == 0.0


def test_unknown_reduction_is_refused():
    with pytest.raises(ValueError, match="reduction must be one of"):
        causal_lm_loss(torch.zeros(1, 3, 4), torch.zeros(1, 3, dtype=torch.long), "mean")


def test_dice_matches_its_formula():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 3.0]])
    target = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    p = torch.sigmoid(logits)
    expected = 1 - (2 * (p * target).sum() + 1e-6) / (p.sum() + target.sum() + 1e-6)
    assert dice_loss(logits, target).item() == pytest.approx(expected.item())
    assert dice_loss(torch.full((4, 4), 50.0), torch.ones(4, 4)).item() == pytest.approx(
        0.0, abs=1e-6
    )


def test_focal_matches_its_formula():
    logits = torch.tensor([2.0, -1.0, 0.5])
    target = torch.tensor([1.0, 1.0, 0.0])
    p = torch.sigmoid(logits)
    terms = []
    for pi, gi in zip(p.tolist(), target.tolist(), strict=True):
        pt = pi if gi else 1 - pi
        at = 0.25 if gi else 0.75
        terms.append(-at * (1 - pt) ** 2 * math.log(pt))
    assert focal_loss(logits, target).item() == pytest.approx(sum(terms) / 3, rel=1e-5)


def test_mask_losses_average_over_masks_and_total_weights():
    a, b = torch.randn(5, 6), torch.randn(3, 2)
    ga, gb = (torch.rand(5, 6) > 0.5).float(), (torch.rand(3, 2) > 0.5).float()
    cfg = LossConfig(ce_weight=1.0, bce_weight=2.0, dice_weight=0.5, focal_weight=3.0)
    got = mask_losses([a, b], [ga, gb], cfg)
    assert got["bce"].item() == pytest.approx(
        (mask_bce_loss(a, ga) + mask_bce_loss(b, gb)).item() / 2
    )
    assert got["dice"].item() == pytest.approx((dice_loss(a, ga) + dice_loss(b, gb)).item() / 2)
    ce, aux = torch.tensor(1.5), torch.tensor(4.0)
    tot = total_loss(ce, got, aux, cfg, router_aux_loss_coef=0.01)
    expected = 1.5 + 2 * got["bce"] + 0.5 * got["dice"] + 3 * got["focal"] + 0.04
    assert tot.item() == pytest.approx(expected.item())


def test_mask_losses_reject_size_or_count_mismatch():
    with pytest.raises(ValueError, match="differ in size"):
        mask_losses([torch.zeros(2, 2)], [torch.zeros(3, 3)], LossConfig())
    with pytest.raises(ValueError, match="1 predicted masks but 0"):
        mask_losses([torch.zeros(2, 2)], [], LossConfig())
    assert mask_losses([], [], LossConfig())["dice"].item() == 0.0
