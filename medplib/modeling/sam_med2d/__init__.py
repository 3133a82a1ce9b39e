"""SAM-Med2D ViT-B with adapters: MedPLIB's pixel decoder, weight-compatible with the release."""

from __future__ import annotations

from .configuration import (
    SamImageEncoderConfig,
    SamMaskDecoderConfig,
    SamMed2DConfig,
    SamPromptEncoderConfig,
)
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .model import SamDecoderOutput, SamMed2D, build_sam_med2d
from .prompt_encoder import PromptEncoder
from .transformer import TwoWayTransformer
from .transforms import (
    centred_pad_offsets,
    postprocess_mask_logits,
    preprocess_image,
    resize_longest_side_hw,
)

__all__ = [
    "ImageEncoderViT",
    "MaskDecoder",
    "PromptEncoder",
    "SamDecoderOutput",
    "SamImageEncoderConfig",
    "SamMaskDecoderConfig",
    "SamMed2D",
    "SamMed2DConfig",
    "SamPromptEncoderConfig",
    "TwoWayTransformer",
    "build_sam_med2d",
    "centred_pad_offsets",
    "postprocess_mask_logits",
    "preprocess_image",
    "resize_longest_side_hw",
]
