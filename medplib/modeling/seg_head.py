"""[SEG] head: the LLM hidden state that predicts `<SEG>` → one SAM prompt embedding."""

from __future__ import annotations

import torch
from torch import nn

from medplib.modeling.configuration import SegHeadConfig


class SegHead(nn.Module):
    """Official `text_hidden_fcs`: Linear(D→D) → ReLU → Linear(D→prompt_dim) → Dropout."""

    def __init__(self, config: SegHeadConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(config.in_features, config.hidden_features),
            nn.ReLU(inplace=True),
            nn.Linear(config.hidden_features, config.out_features),
            nn.Dropout(config.dropout),
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, D) → (N, prompt_dim)."""
        first: nn.Linear = self.net[0]  # type: ignore[assignment]
        return self.net(hidden.to(first.weight.dtype))
