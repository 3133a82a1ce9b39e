"""CLIP vision tower: patch features from a chosen hidden layer (transformers `CLIPVisionModel`)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionModel

from medplib.modeling.configuration import VisionTowerConfig


class CLIPVisionTower(nn.Module):
    """Frozen-in-practice CLIP ViT; built from config with random weights (no downloads)."""

    def __init__(self, config: VisionTowerConfig) -> None:
        super().__init__()
        self.config = config
        self.clip = CLIPVisionModel(config.clip_config())

    @property
    def dtype(self) -> torch.dtype:
        return self.clip.vision_model.embeddings.patch_embedding.weight.dtype

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised pixels → (B, N, C) patch features, N = (S / patch)²."""
        out = self.clip(pixel_values=pixels.to(self.dtype), output_hidden_states=True)
        feats = out.hidden_states[self.config.select_layer]  # (B, 1 + N, C)
        return feats[:, 1:]  # drop CLS: tokens line up with the patch grid
