"""Multimodal projector: CLIP patch features → LLM token embeddings."""

from __future__ import annotations

import torch
from torch import nn

from medplib.modeling.configuration import ProjectorConfig
from medplib.modeling.norms import scaled_rms_norm


class MultimodalProjector(nn.Module):
    """LLaVA-1.5 `mlp2x_gelu`: Linear → GELU → Linear (or a single Linear for `linear`)."""

    def __init__(self, config: ProjectorConfig) -> None:
        super().__init__()
        if config.type == "mlp2x_gelu":
            self.net = nn.Sequential(
                nn.Linear(config.in_features, config.out_features),
                nn.GELU(),
                nn.Linear(config.out_features, config.out_features),
            )
        elif config.type == "linear":
            self.net = nn.Sequential(nn.Linear(config.in_features, config.out_features))
        else:
            raise ValueError(
                f"unknown projector type {config.type!r}; use 'mlp2x_gelu' or 'linear'"
            )
        self.norm = scaled_rms_norm(config.out_features, config.output_rms)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, N, C_clip) → (B, N, D)."""
        first: nn.Linear = self.net[0]  # type: ignore[assignment]
        tokens = self.net(patches.to(first.weight.dtype))  # (B, N, D)
        return tokens if self.norm is None else self.norm(tokens)
