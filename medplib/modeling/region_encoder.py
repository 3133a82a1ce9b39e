"""Region encoder: one LLM-sized feature per region mask, pooled from CLIP patch features.

The official model bilinearly samples up to 512 random points of the region's (nearest-
neighbour downsampled) 24×24 mask and averages them. Here the pooling is exact and
deterministic: a weighted mean over patch cells, each weighted by the fraction of the cell the
region covers (`medplib.modeling.image_processing.region_patch_weights`). Tiny regions keep
the cells they touch instead of vanishing in a nearest-neighbour downsample.
"""

from __future__ import annotations

import torch
from torch import nn

from medplib.modeling.configuration import RegionEncoderConfig


class RegionEncoder(nn.Module):
    """`region_adapter` (Linear on raw CLIP patches) + coverage-weighted mean per region."""

    def __init__(self, config: RegionEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.adapter = nn.Linear(config.in_features, config.out_features)

    def limit_cells(self, weights: torch.Tensor) -> torch.Tensor:
        """Keep the `max_sample_points` highest-coverage cells per region."""
        k = self.config.max_sample_points
        if k <= 0 or weights.shape[-1] <= k:
            return weights
        keep = torch.topk(weights, k, dim=-1, sorted=False).indices  # (R, k)
        return torch.zeros_like(weights).scatter(-1, keep, weights.gather(-1, keep))

    def forward(self, patches: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """patches (N, C_clip) of one image, weights (R, N) coverage → (R, D) region features."""
        if weights.numel() == 0:
            return patches.new_zeros((0, self.config.out_features), dtype=self.adapter.weight.dtype)
        feats = self.adapter(patches.to(self.adapter.weight.dtype))  # (N, D)
        w = self.limit_cells(weights.float())  # (R, N)
        total = w.sum(dim=-1, keepdim=True)  # (R, 1)
        if bool((total <= 0).any()):
            raise ValueError(
                "a region has no coverage on the patch grid; empty regions must be rejected earlier"
            )
        pooled = (w / total) @ feats.float()  # (R, D), fp32 accumulation
        return pooled.to(feats.dtype)
