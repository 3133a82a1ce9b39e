"""Training losses as pure functions (official MedPLIB definitions).

Mask losses take logits and a {0, 1} target of the same (H, W) — the ground-truth resolution —
and return a per-mask scalar; `mask_losses` averages them over all masks of a batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from medplib.modeling.configuration import CE_REDUCTIONS, LossConfig
from medplib.tokenization import IGNORE_INDEX


def causal_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "token"
) -> torch.Tensor:
    """Next-token cross-entropy on supervised tokens; 0 (with grad) when there are none.

    logits (B, L, V), labels (B, L) with IGNORE_INDEX on prompt, image, region and padding.
    `reduction` "token" averages over every supervised token of the batch (the official rule);
    "sample" averages each sequence's tokens first, then the sequences that have any, so a
    one-word answer weighs as much as a sixty-token description.
    """
    if reduction not in CE_REDUCTIONS:
        raise ValueError(f"reduction must be one of {CE_REDUCTIONS}, not {reduction!r}")
    shift_logits = logits[:, :-1].float()  # (B, L-1, V)
    shift_labels = labels[:, 1:]  # (B, L-1)
    supervised = shift_labels != IGNORE_INDEX  # (B, L-1)
    if not bool(supervised.any()):
        return shift_logits.sum() * 0.0
    if reduction == "token":
        return F.cross_entropy(
            shift_logits.reshape(-1, shift_logits.shape[-1]),
            shift_labels.reshape(-1),
            ignore_index=IGNORE_INDEX,
        )
    per_token = F.cross_entropy(
        shift_logits.transpose(1, 2), shift_labels, ignore_index=IGNORE_INDEX, reduction="none"
    )  # (B, L-1), 0 where ignored
    counts = supervised.sum(dim=1)  # (B,)
    has_tokens = counts > 0
    per_sample = per_token.sum(dim=1)[has_tokens] / counts[has_tokens]  # (B',)
    return per_sample.mean()


def mask_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy with logits over the pixels of one mask."""
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Soft Dice on sigmoid probabilities: 1 − (2Σpg + ε) / (Σp + Σg + ε)."""
    p, g = logits.float().sigmoid().reshape(-1), target.float().reshape(-1)
    return 1.0 - (2.0 * (p * g).sum() + eps) / (p.sum() + g.sum() + eps)


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Sigmoid focal loss (RetinaNet), summed over pixels and divided by the pixel count."""
    x, g = logits.float(), target.float()
    p = x.sigmoid()
    ce = F.binary_cross_entropy_with_logits(x, g, reduction="none")
    p_t = p * g + (1 - p) * (1 - g)
    alpha_t = alpha * g + (1 - alpha) * (1 - g)
    return (alpha_t * (1 - p_t) ** gamma * ce).mean()


def mask_losses(
    pred_logits: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    config: LossConfig,
) -> dict[str, torch.Tensor]:
    """BCE, Dice and focal losses, each averaged over masks (zeros when there are no masks)."""
    if len(pred_logits) != len(targets):
        raise ValueError(f"{len(pred_logits)} predicted masks but {len(targets)} target masks")
    if not pred_logits:
        zero = torch.zeros(())
        return {"bce": zero, "dice": zero.clone(), "focal": zero.clone()}
    for p, g in zip(pred_logits, targets, strict=True):
        if p.shape != g.shape:
            raise ValueError(
                f"predicted mask {tuple(p.shape)} and target {tuple(g.shape)} differ in size"
            )
    n = len(pred_logits)
    pairs = list(zip(pred_logits, targets, strict=True))
    return {
        "bce": sum((mask_bce_loss(p, g) for p, g in pairs), torch.zeros(())) / n,
        "dice": sum((dice_loss(p, g, config.dice_eps) for p, g in pairs), torch.zeros(())) / n,
        "focal": sum(
            (focal_loss(p, g, config.focal_alpha, config.focal_gamma) for p, g in pairs),
            torch.zeros(()),
        )
        / n,
    }


def total_loss(
    ce: torch.Tensor,
    masks: dict[str, torch.Tensor],
    aux: torch.Tensor,
    config: LossConfig,
    router_aux_loss_coef: float,
) -> torch.Tensor:
    """ce_w·CE + bce_w·BCE + dice_w·Dice + focal_w·Focal + coef·Σ router aux."""
    dev = ce.device
    return (
        config.ce_weight * ce
        + config.bce_weight * masks["bce"].to(dev)
        + config.dice_weight * masks["dice"].to(dev)
        + config.focal_weight * masks["focal"].to(dev)
        + router_aux_loss_coef * aux.to(dev)
    )
