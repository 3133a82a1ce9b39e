"""CLIP vision tower: patch features from a chosen hidden layer (transformers `CLIPVisionModel`)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from medplib.modeling.configuration import VisionTowerConfig


class _CLIPWeights(nn.Module):
    """Holds the CLIP encoder as `vision_model`, so its weights are named `clip.vision_model.*`.

    That is the layout of every MedPLIB checkpoint and of the official key map; transformers 5's
    `CLIPVisionModel` no longer nests its encoder one level down, so the level lives here.
    """

    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        self.vision_model = CLIPVisionModel(config)


class CLIPVisionTower(nn.Module):
    """Frozen-in-practice CLIP ViT; built from config with random weights (no downloads)."""

    def __init__(self, config: VisionTowerConfig) -> None:
        super().__init__()
        self.config = config
        self.clip = _CLIPWeights(config.clip_config())

    @property
    def dtype(self) -> torch.dtype:
        return self.clip.vision_model.embeddings.patch_embedding.weight.dtype

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised pixels → (B, N, C) patch features, N = (S / patch)²."""
        out = self.clip.vision_model(pixel_values=pixels.to(self.dtype), output_hidden_states=True)
        feats = out.hidden_states[self.config.select_layer]  # (B, 1 + N, C)
        return feats[:, 1:]  # drop CLS: tokens line up with the patch grid
