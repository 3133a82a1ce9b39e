"""SAM prompt encoder, extended by MedPLIB with text (``<SEG>``) embeddings as sparse tokens.

All coordinates are in pixels of the padded encoder input (S x S), as (x, y).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import LayerNorm2d
from .configuration import SamPromptEncoderConfig


class PositionEmbeddingRandom(nn.Module):
    """Random-Fourier positional encoding of normalised (x, y) coordinates."""

    positional_encoding_gaussian_matrix: torch.Tensor  # (2, num_pos_feats)

    def __init__(self, num_pos_feats: int, scale: float = 1.0) -> None:
        super().__init__()
        # A buffer, not a parameter: fixed after init, but it must travel with the checkpoint.
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn(2, num_pos_feats)
        )

    def _encode(self, coords_01: torch.Tensor) -> torch.Tensor:
        """(..., 2) coordinates in [0, 1] -> (..., 2 * num_pos_feats) features, in fp32."""
        # fp32 on purpose: sin(2*pi*x) of bf16 arguments is too coarse to localise anything.
        gaussian = self.positional_encoding_gaussian_matrix.float()
        proj = 2 * math.pi * ((2 * coords_01.float() - 1) @ gaussian)
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def forward(self, hw: tuple[int, int]) -> torch.Tensor:
        """Encoding of every cell centre of an (h, w) grid: (C, h, w)."""
        h, w = hw
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2) as (x, y)
        return self._encode(grid).permute(2, 0, 1)  # (C, h, w)

    def forward_with_coords(
        self, coords_px: torch.Tensor, image_hw: tuple[int, int]
    ) -> torch.Tensor:
        """(..., 2) (x, y) pixel coordinates -> (..., C) encodings."""
        size_xy = coords_px.new_tensor([image_hw[1], image_hw[0]], dtype=torch.float32)
        return self._encode(coords_px.float() / size_xy)


class PromptEncoder(nn.Module):
    """Encodes points, boxes, masks and text embeddings into sparse and dense prompt embeddings."""

    def __init__(self, config: SamPromptEncoderConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.embed_dim = dim
        self.image_embedding_size = tuple(config.image_embedding_size)
        self.input_image_size = tuple(config.input_image_size)
        self.pe_layer = PositionEmbeddingRandom(dim // 2)
        self.num_point_embeddings = 4  # negative point, positive point, 2 box corners
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, dim)
        h, w = self.image_embedding_size
        self.mask_input_size = (4 * h, 4 * w)  # masks come at the decoder's low-res output size
        c = config.mask_in_chans
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, c // 4, kernel_size=2, stride=2),
            LayerNorm2d(c // 4),
            nn.GELU(),
            nn.Conv2d(c // 4, c, kernel_size=2, stride=2),
            LayerNorm2d(c),
            nn.GELU(),
            nn.Conv2d(c, dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, dim)

    def _point_embed(self, i: int) -> torch.Tensor:
        """(1, C) learned embedding: 0 negative point, 1 positive point, 2/3 box corners."""
        embedding = self.point_embeddings[i]
        assert isinstance(embedding, nn.Embedding)
        return embedding.weight

    @property
    def _dtype(self) -> torch.dtype:
        return self.no_mask_embed.weight.dtype

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image-embedding grid: (1, C, h, w)."""
        hw = (self.image_embedding_size[0], self.image_embedding_size[1])
        return self.pe_layer(hw).unsqueeze(0).to(self._dtype)

    def _embed_points(
        self, coords_px: torch.Tensor, labels: torch.Tensor, pad: bool
    ) -> torch.Tensor:
        """(N, P, 2) points and (N, P) labels (1 fg, 0 bg, -1 none) -> (N, P(+1), C)."""
        coords_px = coords_px + 0.5  # pixel centre
        if pad:
            # SAM appends a "not a point" token when no box accompanies the points.
            n = coords_px.shape[0]
            coords_px = torch.cat([coords_px, coords_px.new_zeros(n, 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((n, 1), -1)], dim=1)
        hw = (self.input_image_size[0], self.input_image_size[1])
        pe = self.pe_layer.forward_with_coords(coords_px, hw).to(self._dtype)  # (N, P, C)
        lab = labels[..., None]  # (N, P, 1)
        pe = torch.where(lab == -1, torch.zeros_like(pe), pe)
        pe = pe + (lab == -1) * self.not_a_point_embed.weight
        pe = pe + (lab == 0) * self._point_embed(0)
        pe = pe + (lab == 1) * self._point_embed(1)
        return pe

    def _embed_boxes(self, boxes_xyxy_px: torch.Tensor) -> torch.Tensor:
        """(N, 4) boxes -> (N, 2, C) corner tokens."""
        corners = (boxes_xyxy_px + 0.5).reshape(-1, 2, 2)  # (N, 2, 2) top-left, bottom-right
        hw = (self.input_image_size[0], self.input_image_size[1])
        pe = self.pe_layer.forward_with_coords(corners, hw).to(self._dtype)
        corner_embed = torch.cat([self._point_embed(2), self._point_embed(3)])
        return pe + corner_embed  # (N, 2, C)

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed prompts for the mask decoder.

        Arguments:
          points: ((N, P, 2) (x, y) pixel coords, (N, P) labels: 1 fg, 0 bg, -1 ignore) or None.
          boxes: (N, 4) boxes in xyxy pixels, or None.
          masks: (N, 1, 4h, 4w) low-resolution mask logits, or None.
          text_embeds: (N, T, C) text embeddings (MedPLIB's projected ``<SEG>`` states), or None.

        Returns:
          sparse: (N, tokens, C) — point, box, then text tokens, in the parameters' dtype.
          dense: (N, C, h, w) — the encoded mask, or the learned "no mask" embedding.
        """
        sizes = {
            name: t.shape[0]
            for name, t in (
                ("points", None if points is None else points[0]),
                ("boxes", boxes),
                ("masks", masks),
                ("text_embeds", text_embeds),
            )
            if t is not None
        }
        if len(set(sizes.values())) > 1:
            raise ValueError(f"all prompts must share the batch size N, got {sizes}.")
        n = next(iter(sizes.values()), 1)
        device = self.no_mask_embed.weight.device
        parts = [torch.empty(n, 0, self.embed_dim, device=device, dtype=self._dtype)]
        if points is not None:
            parts.append(self._embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            parts.append(self._embed_boxes(boxes))
        if text_embeds is not None:
            if text_embeds.dim() != 3 or text_embeds.shape[-1] != self.embed_dim:
                raise ValueError(
                    f"text_embeds must be (N, T, {self.embed_dim}), got {tuple(text_embeds.shape)}."
                )
            parts.append(text_embeds.to(self._dtype))
        sparse = torch.cat(parts, dim=1)

        h, w = self.image_embedding_size
        if masks is not None:
            if tuple(masks.shape[1:]) != (1, *self.mask_input_size):
                raise ValueError(
                    f"masks must be (N, 1, {self.mask_input_size[0]}, {self.mask_input_size[1]}), "
                    f"got {tuple(masks.shape)}."
                )
            dense = self.mask_downscaling(masks.to(self._dtype))  # (N, C, h, w)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(n, -1, h, w)
        return sparse, dense
