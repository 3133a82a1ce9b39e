"""SamMed2D: the pixel decoder of MedPLIB, composed of image encoder, prompt encoder, mask decoder.

Parameter names match the released `sam-med2d_b.pth` (``checkpoint["model"]``), so that state
dict loads with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .configuration import SamMed2DConfig
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .transforms import postprocess_mask_logits, preprocess_image


class SamDecoderOutput(NamedTuple):
    """Mask decoder output for N prompts."""

    low_res_logits: torch.Tensor  # (N, 1, 4h, 4w) mask logits in the padded S x S frame
    iou_predictions: torch.Tensor  # (N, 1) predicted IoU of each mask


class SamMed2D(nn.Module):
    """Thin composer of the three SAM-Med2D parts plus MedPLIB's pre/post-processing."""

    pixel_mean: torch.Tensor  # (3, 1, 1), 0-255 units
    pixel_std: torch.Tensor  # (3, 1, 1), 0-255 units

    def __init__(
        self,
        image_encoder: ImageEncoderViT,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self._pixel_stats = (tuple(pixel_mean), tuple(pixel_std))
        # Not persistent: the released checkpoint does not contain them.
        self.register_buffer("pixel_mean", torch.empty(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.empty(3, 1, 1), persistent=False)
        self.reset_pixel_stats()

    @property
    def img_size(self) -> int:
        """Side S of the square encoder input, in pixels."""
        return self.image_encoder.img_size

    def reset_pixel_stats(self) -> None:
        """Refill the normalisation buffers; needed after ``to_empty()`` since no checkpoint has them."""
        mean, std = self._pixel_stats
        with torch.no_grad():
            self.pixel_mean.copy_(torch.tensor(mean).view(3, 1, 1))
            self.pixel_std.copy_(torch.tensor(std).view(3, 1, 1))

    def preprocess(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (H, W, 3) image -> normalised, centre-padded (3, S, S) float32 on the model device.

        The resized (valid) size is ``resize_longest_side_hw((H, W), self.img_size)``.
        """
        # The exact fp32 statistics, not the buffers: `.to(bfloat16)` would have rounded those.
        mean, std = (torch.tensor(v, device=self.pixel_mean.device) for v in self._pixel_stats)
        return preprocess_image(image, target_px=self.img_size, pixel_mean=mean, pixel_std=std)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) preprocessed pixels -> (B, C, S/16, S/16) image embeddings."""
        return self.image_encoder(pixels)

    def decode_text_prompts(
        self,
        image_embeddings: torch.Tensor,
        text_embeds: torch.Tensor,
        image_index: torch.Tensor,
        multimask_output: bool = False,
    ) -> SamDecoderOutput:
        """Decode one mask per text prompt.

        Arguments:
          image_embeddings: (B, C, h, w) from `encode_image`.
          text_embeds: (N, 1, C) prompt embeddings (MedPLIB's projected ``<SEG>`` states).
          image_index: (N,) long, the image each prompt refers to; several may share one.
          multimask_output: return SAM's 3 ambiguity masks instead of the single mask.

        Returns:
          low_res_logits (N, K, 4h, 4w) and iou_predictions (N, K); K = 1 unless multimask.
        """
        b = image_embeddings.shape[0]
        n = text_embeds.shape[0]
        if image_index.shape != (n,) or image_index.dtype != torch.long:
            raise ValueError(
                f"image_index must be a ({n},) long tensor, got {tuple(image_index.shape)} "
                f"{image_index.dtype}."
            )
        if n and (int(image_index.min()) < 0 or int(image_index.max()) >= b):
            raise ValueError(
                f"image_index values must lie in [0, {b}), got {image_index.tolist()}."
            )
        sparse, dense = self.prompt_encoder(text_embeds=text_embeds)  # (N, 1, C), (N, C, h, w)
        per_prompt = image_embeddings[image_index.to(image_embeddings.device)]  # (N, C, h, w)
        masks, iou = self.mask_decoder(
            image_embeddings=per_prompt.to(dense.dtype),
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )
        return SamDecoderOutput(masks, iou)

    def postprocess_masks(
        self,
        low_res_logits: torch.Tensor,
        *,
        input_hw: tuple[int, int],
        original_hw: tuple[int, int],
    ) -> torch.Tensor:
        """(N, K, 4h, 4w) logits -> (N, K, H, W) logits aligned with the original image.

        `input_hw` is the resized size before centred padding; `original_hw` is (H, W).
        """
        return postprocess_mask_logits(
            low_res_logits, input_px=self.img_size, input_hw=input_hw, original_hw=original_hw
        )


def build_sam_med2d(config: SamMed2DConfig) -> SamMed2D:
    """Build an (untrained) SamMed2D; load `sam-med2d_b.pth`'s ``["model"]`` to get the release."""
    return SamMed2D(
        image_encoder=ImageEncoderViT(config.image_encoder),
        prompt_encoder=PromptEncoder(config.prompt_encoder),
        mask_decoder=MaskDecoder(config.mask_decoder),
        pixel_mean=config.pixel_mean,
        pixel_std=config.pixel_std,
    )
