"""ViT image encoder of SAM-Med2D: windowed/global attention, relative positions, adapters.

Input is a normalised, padded (B, 3, S, S) image; output is a (B, out_chans, S/16, S/16)
embedding. Token maps are kept channels-last, (B, H, W, C), inside the transformer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, MLPBlock
from .configuration import SamImageEncoderConfig


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, 3, S, S) -> (B, S/p, S/p, C)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # (B, H, W, C)


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split (B, H, W, C) into (B * nW, window, window, C), zero-padding H and W up to a multiple.

    Returns the windows and the padded size (Hp, Wp). Padded tokens are plain zeros and are not
    masked out of attention, which is what the pretrained weights expect.
    """
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c)
    return windows, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of `window_partition`: (B * nW, window, window, C) -> (B, H, W, C)."""
    hp, wp = padded_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.view(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :].contiguous()


def relative_position_bias(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, hw: tuple[int, int]
) -> torch.Tensor:
    """Decomposed relative-position attention bias (MViTv2) for square self-attention.

    q: (N, H*W, D) queries; rel_pos_h: (2H-1, D); rel_pos_w: (2W-1, D).
    Returns the additive bias (N, H*W, H*W) for query (y, x) attending to key (ky, kx).
    """
    h, w = hw
    if rel_pos_h.shape[0] != 2 * h - 1 or rel_pos_w.shape[0] != 2 * w - 1:
        raise ValueError(
            f"relative-position tables {tuple(rel_pos_h.shape)}/{tuple(rel_pos_w.shape)} do not "
            f"fit a {h}x{w} attention map; the encoder only runs at its configured img_size."
        )
    ar_h = torch.arange(h, device=rel_pos_h.device)
    ar_w = torch.arange(w, device=rel_pos_w.device)
    table_h = rel_pos_h[ar_h[:, None] - ar_h[None, :] + h - 1]  # (H, H, D), offset y - ky
    table_w = rel_pos_w[ar_w[:, None] - ar_w[None, :] + w - 1]  # (W, W, D), offset x - kx
    q = q.reshape(-1, h, w, q.shape[-1])  # (N, H, W, D)
    bias_h = torch.einsum("nyxd,ykd->nyxk", q, table_h)  # (N, H, W, kH)
    bias_w = torch.einsum("nyxd,xkd->nyxk", q, table_w)  # (N, H, W, kW)
    bias = bias_h[..., :, None] + bias_w[..., None, :]  # (N, H, W, kH, kW)
    return bias.reshape(-1, h * w, h * w)


class Attention(nn.Module):
    """Multi-head self-attention over a (B, H, W, C) token map, with relative positions."""

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool, use_rel_pos: bool, input_hw: tuple[int, int]
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            # Zero init: attention starts purely content-based; pretrained tables replace this.
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_hw[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_hw[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)  # (B, HW, 3, nh, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, HW, hd)
        bias = None
        if self.use_rel_pos:
            bias = relative_position_bias(
                q.reshape(b * self.num_heads, h * w, -1), self.rel_pos_h, self.rel_pos_w, (h, w)
            )
            bias = bias.view(b, self.num_heads, h * w, h * w).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, nh, HW, hd)
        out = out.transpose(1, 2).reshape(b, h, w, c)
        return self.proj(out)


class Adapter(nn.Module):
    """SAM-Med2D adapter: a squeeze-excitation channel gate, then a down/up-sampling conv branch.

    (B, H, W, C) -> (B, H, W, C); H and W must be even so the stride-2 conv and the stride-2
    transposed conv restore the grid.
    """

    def __init__(self, dim: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.channel = nn.Sequential(
            nn.Linear(dim, hidden, bias=False),
            nn.ReLU(),
            nn.Linear(hidden, dim, bias=False),
            nn.Sigmoid(),
        )
        self.spatial = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=3, stride=2, padding=1, bias=False),
            nn.ReLU(),
            nn.ConvTranspose2d(dim, dim, kernel_size=4, stride=2, padding=1, bias=False),
            nn.ReLU(),
        )
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)  # (B, C, H, W)
        gate = self.channel(x.mean(dim=(2, 3)))  # (B, C)
        x = x + self.spatial(x * gate[:, :, None, None])
        return self.norm(x.permute(0, 2, 3, 1))  # (B, H, W, C)


class Block(nn.Module):
    """Pre-norm ViT block; window attention unless `window_size == 0`; adapter beside the MLP."""

    def __init__(self, config: SamImageEncoderConfig, window_size: int) -> None:
        super().__init__()
        dim = config.embed_dim
        grid = config.grid_size
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        attn_hw = (window_size, window_size) if window_size else (grid, grid)
        self.attn = Attention(dim, config.num_heads, config.qkv_bias, config.use_rel_pos, attn_hw)
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = MLPBlock(dim, int(dim * config.mlp_ratio), act=nn.GELU)
        self.Adapter: Adapter | None = None  # attribute name fixed by the released checkpoint
        if config.adapter:
            self.Adapter = Adapter(dim, config.adapter_mlp_ratio, config.adapter_layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size:
            hw = (x.shape[1], x.shape[2])
            x, padded_hw = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, padded_hw, hw)
        else:
            x = self.attn(x)
        x = shortcut + x
        x_norm = self.norm2(x)
        out = x + self.mlp(x_norm)
        if self.Adapter is not None:
            out = out + self.Adapter(x_norm)
        return out


class ImageEncoderViT(nn.Module):
    """SAM-Med2D ViT: (B, 3, S, S) normalised pixels -> (B, out_chans, S/16, S/16)."""

    def __init__(self, config: SamImageEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.img_size = config.img_size
        grid = config.grid_size
        self.patch_embed = PatchEmbed(config.patch_size, config.in_chans, config.embed_dim)
        self.pos_embed: nn.Parameter | None = None
        if config.use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, config.embed_dim))
        self.blocks = nn.ModuleList(
            Block(config, 0 if i in config.global_attn_indexes else config.window_size)
            for i in range(config.depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(config.embed_dim, config.out_chans, kernel_size=1, bias=False),
            LayerNorm2d(config.out_chans),
            nn.Conv2d(config.out_chans, config.out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(config.out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.img_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.config.in_chans, s, s):
            raise ValueError(
                f"image encoder expects (B, {self.config.in_chans}, {s}, {s}) pixels, got "
                f"{tuple(x.shape)}; run SamMed2D.preprocess first."
            )
        x = self.patch_embed(x)  # (B, g, g, C)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))  # (B, out_chans, g, g)
