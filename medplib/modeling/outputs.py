"""Typed outputs of the MedPLIB model."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LayerRouting:
    """Routing of one MoE decoder layer for one forward call."""

    layer: int  # decoder layer index
    expert_index: torch.Tensor  # (B, L) long: expert chosen per token
    router_probs: torch.Tensor  # (B, L, E) fp32
    kept: torch.Tensor  # (B, L) bool: False where the token was dropped for capacity
    aux_loss: torch.Tensor  # () load-balancing loss of this layer

    def expert_share(self, token_mask: torch.Tensor | None = None) -> list[float]:
        """Share of tokens per expert, optionally over the tokens where `token_mask` (B, L) is True."""
        idx = (
            self.expert_index
            if token_mask is None
            else self.expert_index[token_mask.to(torch.bool)]
        )
        counts = torch.bincount(idx.reshape(-1).cpu(), minlength=self.router_probs.shape[-1])
        total = max(int(counts.sum()), 1)
        return [int(c) / total for c in counts.tolist()]


@dataclass
class MedPLIBOutput:
    """Result of `MedPLIBForCausalLM.forward`.

    Sequences are in the *expanded* layout: the image placeholder replaced by its visual
    tokens and each region sentinel by its region feature, right-padded to length L.
    """

    loss: torch.Tensor | None = None  # weighted total, when labels are given
    ce_loss: torch.Tensor | None = None
    bce_loss: torch.Tensor | None = None
    dice_loss: torch.Tensor | None = None
    focal_loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None  # Σ over MoE layers (before the coefficient)
    logits: torch.Tensor | None = None  # (B, L, V)
    last_hidden_state: torch.Tensor | None = None  # (B, L, D) after the final norm
    attention_mask: torch.Tensor | None = None  # (B, L) long
    labels: torch.Tensor | None = None  # (B, L) long, IGNORE_INDEX where unsupervised
    token_ids: torch.Tensor | None = None  # (B, L) long: text ids, IMAGE/REGION sentinels elsewhere
    # One entry per `<SEG>` token in reading order over the batch.
    pred_mask_logits: list[torch.Tensor] = field(
        default_factory=list
    )  # each (H, W) at the GT / original size
    pred_mask_sample_index: list[int] = field(default_factory=list)
    pred_iou: list[torch.Tensor] = field(default_factory=list)  # each () SAM IoU-head estimate
    routing: list[LayerRouting] = field(default_factory=list)
