"""Region encoder: one LLM-sized feature per region mask, pooled from CLIP patch features.

The official model bilinearly samples up to 512 random points of the region's (nearest-
neighbour downsampled) 24×24 mask and averages them. Here the pooling is exact and
deterministic: a weighted mean over patch cells, each weighted by the fraction of the cell the
region covers (`medplib.modeling.image_processing.region_patch_weights`). Tiny regions keep
the cells they touch instead of vanishing in a nearest-neighbour downsample.

With `shape_features` the encoder adds an embedding of the region's shape, read from the same
coverage weights (`region_shape`): on a coarse grid a small finding and the organ around it
pool the same patch, and only their size and extent tell them apart.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medplib.modeling.configuration import RegionEncoderConfig
from medplib.modeling.norms import scaled_rms_norm

SHAPE_FEATURES = 6  # sqrt(area), centre x / y, spread x / y, fullest cell's coverage


def region_shape(weights: torch.Tensor) -> torch.Tensor:
    """(R, N) coverage of a square grid → (R, 6) shape summary, every entry in [0, 1].

    sqrt of the covered fraction of the image; coverage-weighted centre (x, y) of the cells,
    0 = left / top edge, 1 = right / bottom; weighted spread (x, y) in image widths; and the
    coverage of the fullest cell, which is below 1 only for regions smaller than a cell.
    """
    n = weights.shape[-1]
    grid = math.isqrt(n)
    if grid * grid != n:
        raise ValueError(f"region weights cover {n} cells, not a square grid")
    w = weights.float()
    total = w.sum(dim=-1, keepdim=True).clamp_min(1e-12)  # (R, 1)
    centres = (torch.arange(grid, dtype=torch.float32, device=w.device) + 0.5) / grid  # (g,)
    ys = centres.repeat_interleave(grid)  # (N,) row-major cell order
    xs = centres.repeat(grid)  # (N,)
    p = w / total  # (R, N)
    cx, cy = p @ xs, p @ ys  # (R,)
    sx = (p @ xs.square() - cx.square()).clamp_min(0).sqrt()
    sy = (p @ ys.square() - cy.square()).clamp_min(0).sqrt()
    area = (total.squeeze(-1) / n).clamp(0, 1).sqrt()
    fullest = w.max(dim=-1).values.clamp(0, 1)
    return torch.stack([area, cx, cy, sx, sy, fullest], dim=-1)  # (R, 6)


class RegionEncoder(nn.Module):
    """`region_adapter` (Linear on raw CLIP patches) + coverage-weighted mean per region,
    RMS-normalised with `output_rms`, plus, with `shape_features`, a Linear embedding of
    `region_shape`."""

    def __init__(self, config: RegionEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.adapter = nn.Linear(config.in_features, config.out_features)
        self.norm = scaled_rms_norm(config.out_features, config.output_rms)
        self.shape_embed: nn.Linear | None = None
        if config.shape_features:
            # Zero-initialised: the encoder starts as the plain mean and learns what shape adds.
            self.shape_embed = nn.Linear(SHAPE_FEATURES, config.out_features)
            nn.init.zeros_(self.shape_embed.weight)
            nn.init.zeros_(self.shape_embed.bias)

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
        if self.norm is not None:
            pooled = self.norm(pooled.to(feats.dtype)).float()
        if self.shape_embed is not None:
            shape = region_shape(weights.float())  # the whole region, not the capped cells
            pooled = pooled + self.shape_embed(shape.to(self.shape_embed.weight.dtype)).float()
        return pooled.to(feats.dtype)
