"""Region encoder: one LLM-sized feature per region mask, pooled from CLIP patch features.

Every pooling is a weighted mean of the adapted patch features, so it is written as weights
over the patch grid (R, N). Two poolings (`RegionEncoderConfig.pooling`):

- "area" (this project's models): exact and deterministic, each cell weighted by the fraction
  of it the region covers (`medplib.modeling.image_processing.region_patch_weights`). Tiny
  regions keep the cells they touch instead of vanishing in a nearest-neighbour downsample.
- "official" (converted MedPLIB checkpoints): the released sampler. The input weights are the
  0/1 cells of the region's top-left-pixel reduction (`region_cells_official`); at most
  `max_sample_points` of them are drawn at random (fixed seed in eval mode), each is sampled
  bilinearly with align_corners=True at normalised position index / grid, which lands at
  index · (grid − 1) / grid cells, shifted towards the top-left, and the samples are
  averaged. Because the adapter is affine and bilinear weights sum to 1, sampling the adapted
  map equals adapting the sampled patches, so this is again one weight vector per region
  (`official_sample_weights`).

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


def _align_corners_axis(index: torch.Tensor, grid: int) -> tuple[torch.Tensor, ...]:
    """Cells and weights of a bilinear sample at `index` / grid with align_corners=True.

    The sample sits at index · (grid − 1) / grid in cell units: between cell lo = floor of
    that and lo + 1, with weight 1 − frac on lo. Returns (lo, hi, w_lo, w_hi), each (P,).
    """
    pos = index.to(torch.float64) * (grid - 1) / grid  # (P,) in cell units
    lo = pos.floor()
    frac = pos - lo
    lo_i = lo.long()
    hi_i = (lo_i + 1).clamp_max(grid - 1)
    return lo_i, hi_i, 1.0 - frac, frac


def official_sample_weights(cells: torch.Tensor, grid: int) -> torch.Tensor:
    """(P,) flat row-major indices of sampled cells → (grid * grid,) float64 weights, sum 1.

    The weights of the released model's pooling: the mean over the P points of a bilinear,
    align_corners=True sample of the (grid, grid) feature map at (row / grid, col / grid).
    """
    if cells.numel() == 0:
        raise ValueError("the official region sampler needs at least one cell")
    rows, cols = cells // grid, cells % grid
    r0, r1, wr0, wr1 = _align_corners_axis(rows, grid)
    c0, c1, wc0, wc1 = _align_corners_axis(cols, grid)
    out = torch.zeros(grid * grid, dtype=torch.float64, device=cells.device)
    for r, wr in ((r0, wr0), (r1, wr1)):
        for c, wc in ((c0, wc0), (c1, wc1)):
            out.index_add_(0, r * grid + c, wr * wc)
    return out / cells.numel()


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

    def sample_cells(self, cells: torch.Tensor) -> torch.Tensor:
        """(N,) 0/1 cells of one region → (P,) flat indices of the sampled ones, P ≤ the limit.

        Like the released sampler, a region with more cells than `max_sample_points` keeps a
        random subset: from the global RNG in training, from `sample_seed` in eval mode.
        """
        idx = torch.nonzero(cells > 0).squeeze(-1).cpu()  # (P,)
        k = self.config.max_sample_points
        if k <= 0 or idx.numel() <= k:
            return idx
        gen = None if self.training else torch.Generator().manual_seed(self.config.sample_seed)
        return idx[torch.randperm(idx.numel(), generator=gen)[:k]]

    def official_weights(self, cells: torch.Tensor) -> torch.Tensor:
        """(R, N) 0/1 top-left-pixel cells → (R, N) float32 weights of the official sampler."""
        grid = math.isqrt(cells.shape[-1])
        if grid * grid != cells.shape[-1]:
            raise ValueError(f"region cells cover {cells.shape[-1]} cells, not a square grid")
        rows = []
        for r in range(cells.shape[0]):
            picked = self.sample_cells(cells[r])
            if picked.numel() == 0:
                raise ValueError(
                    "a region has no cell on the patch grid; empty regions must be rejected earlier"
                )
            rows.append(official_sample_weights(picked, grid))
        return torch.stack(rows).to(device=cells.device, dtype=torch.float32)

    def forward(self, patches: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """patches (N, C_clip) of one image, weights (R, N) → (R, D) region features.

        `weights` are area coverage ("area" pooling) or the 0/1 top-left-pixel cells
        ("official" pooling), as `region_grid_weights` makes them.
        """
        if weights.numel() == 0:
            return patches.new_zeros((0, self.config.out_features), dtype=self.adapter.weight.dtype)
        feats = self.adapter(patches.to(self.adapter.weight.dtype))  # (N, D)
        if self.config.pooling == "official":
            w = self.official_weights(weights)  # (R, N), rows sum to 1
        else:
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
