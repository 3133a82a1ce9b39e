"""SAM mask decoder: output tokens + prompt tokens -> mask logits at 4x the embedding grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d
from .configuration import SamMaskDecoderConfig
from .transformer import TwoWayTransformer


class MLP(nn.Module):
    """Plain MLP with ReLU between layers and none after the last (hypernetwork / IoU heads)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(
            nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MaskDecoder(nn.Module):
    """Predicts mask logits and their IoU from image and prompt embeddings."""

    def __init__(self, config: SamMaskDecoderConfig) -> None:
        super().__init__()
        dim = config.transformer_dim
        self.transformer_dim = dim
        self.transformer = TwoWayTransformer(
            depth=config.depth,
            embedding_dim=dim,
            num_heads=config.num_heads,
            mlp_dim=config.mlp_dim,
            attention_downsample_rate=config.attention_downsample_rate,
        )
        self.num_multimask_outputs = config.num_multimask_outputs
        self.num_mask_tokens = config.num_multimask_outputs + 1  # +1: the single-mask token 0
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            dim, config.iou_head_hidden_dim, self.num_mask_tokens, config.iou_head_depth
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,  # (N, C, h, w), one per prompt
        image_pe: torch.Tensor,  # (1, C, h, w)
        sparse_prompt_embeddings: torch.Tensor,  # (N, T, C)
        dense_prompt_embeddings: torch.Tensor,  # (N, C, h, w)
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns mask logits (N, K, 4h, 4w) and IoU predictions (N, K).

        K is 1 (the single-mask token) or `num_multimask_outputs` (the ambiguity tokens).
        """
        n, c, h, w = image_embeddings.shape
        if sparse_prompt_embeddings.shape[0] != n or dense_prompt_embeddings.shape[0] != n:
            raise ValueError(
                f"image_embeddings ({n}), sparse ({sparse_prompt_embeddings.shape[0]}) and dense "
                f"({dense_prompt_embeddings.shape[0]}) prompt embeddings must share N."
            )
        sparse = sparse_prompt_embeddings.to(self.iou_token.weight.dtype)
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight])  # (1+M, C)
        tokens = torch.cat([output_tokens.expand(n, -1, -1), sparse], dim=1)  # (N, 1+M+T, C)
        src = image_embeddings + dense_prompt_embeddings  # (N, C, h, w)
        pos = image_pe.expand(n, -1, -1, -1)  # (N, C, h, w)

        hs, src = self.transformer(src, pos, tokens)  # (N, 1+M+T, C), (N, hw, C)
        iou_token_out = hs[:, 0]  # (N, C)
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens]  # (N, M, C)

        upscaled = self.output_upscaling(
            src.transpose(1, 2).reshape(n, c, h, w)
        )  # (N, C/8, 4h, 4w)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )  # (N, M, C/8)
        masks = hyper_in @ upscaled.flatten(2)  # (N, M, 16hw)
        masks = masks.view(n, self.num_mask_tokens, upscaled.shape[2], upscaled.shape[3])
        iou_pred = self.iou_prediction_head(iou_token_out)  # (N, M)

        keep = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, keep], iou_pred[:, keep]
