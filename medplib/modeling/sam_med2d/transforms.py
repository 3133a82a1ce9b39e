"""Pure image/mask geometry for the SAM-Med2D input frame.

MedPLIB resizes an image so its longest side equals S (the encoder's img_size) and pads it to
S x S with the resized image *centred* (original SAM pads bottom-right instead). Every function
here maps between the original frame (H, W), the resized frame (h_resized, w_resized) and the
padded S x S frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medplib.errors import UserInputError


def resize_longest_side_hw(original_hw: tuple[int, int], target_px: int) -> tuple[int, int]:
    """Size (h, w) after scaling `original_hw` so its longest side is `target_px`.

    Rounds half up (``int(x * scale + 0.5)``) like SAM's ResizeLongestSide; never returns 0.
    """
    h, w = original_hw
    if h <= 0 or w <= 0:
        raise UserInputError(f"image size must be positive, got {h}x{w}.")
    scale = target_px / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def centred_pad_offsets(resized_hw: tuple[int, int], target_px: int) -> tuple[int, int]:
    """(top, left) offset of the resized image inside the S x S padded square.

    Odd padding puts the extra row/column at the bottom/right, as MedPLIB does.
    """
    h, w = resized_hw
    if not (0 < h <= target_px and 0 < w <= target_px):
        raise ValueError(f"resized size {h}x{w} does not fit a {target_px}x{target_px} square.")
    return (target_px - h) // 2, (target_px - w) // 2


def _as_hw3_float(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Validate a (H, W, 3) or (H, W) uint8 image and return it as float (3, H, W)."""
    tensor = (
        torch.from_numpy(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
    )
    if tensor.dtype != torch.uint8:
        raise UserInputError(
            f"expected a uint8 image with values 0-255, got dtype {tensor.dtype}; "
            "window or rescale it to uint8 first."
        )
    if tensor.dim() == 2:
        tensor = tensor[..., None].expand(-1, -1, 3)  # grey-scale -> RGB by replication
    if tensor.dim() != 3 or tensor.shape[-1] != 3:
        raise UserInputError(
            f"expected an image of shape (H, W, 3) or (H, W), got {tuple(tensor.shape)}."
        )
    if tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise UserInputError(f"image is empty: shape {tuple(tensor.shape)}.")
    return tensor.permute(2, 0, 1).float()  # (3, H, W)


def preprocess_image(
    image: np.ndarray | torch.Tensor,
    *,
    target_px: int,
    pixel_mean: torch.Tensor | Sequence[float],
    pixel_std: torch.Tensor | Sequence[float],
) -> torch.Tensor:
    """uint8 (H, W, 3) image -> normalised, centre-padded (3, S, S) float32 tensor.

    Steps: bilinear antialiased resize of the longest side to S, normalise with the ImageNet
    statistics in 0-255 units, then zero-pad around the centred image (zero = the mean colour).
    The result lives on `pixel_mean`'s device when that is a tensor.
    """
    mean = torch.as_tensor(pixel_mean, dtype=torch.float32).reshape(3, 1, 1)
    std = torch.as_tensor(pixel_std, dtype=torch.float32).reshape(3, 1, 1).to(mean.device)
    x = _as_hw3_float(image).to(mean.device)  # (3, H, W)
    h_resized, w_resized = resize_longest_side_hw((x.shape[1], x.shape[2]), target_px)
    if (h_resized, w_resized) != (x.shape[1], x.shape[2]):
        x = F.interpolate(
            x[None], (h_resized, w_resized), mode="bilinear", align_corners=False, antialias=True
        )[0]
        # The checkpoint saw resized images re-quantised to uint8.
        x = x.round().clamp(0, 255)
    x = (x - mean) / std
    top, left = centred_pad_offsets((h_resized, w_resized), target_px)
    bottom, right = target_px - h_resized - top, target_px - w_resized - left
    return F.pad(x, (left, right, top, bottom))  # (3, S, S)


def postprocess_mask_logits(
    low_res_logits: torch.Tensor,
    *,
    input_px: int,
    input_hw: tuple[int, int],
    original_hw: tuple[int, int],
) -> torch.Tensor:
    """(N, K, h, w) logits in the padded frame -> (N, K, H, W) logits in the original frame.

    Upsamples to S x S, crops the centred valid region `input_hw` (the resized image size),
    and resizes that region to `original_hw`, all bilinearly.
    """
    if low_res_logits.dim() != 4:
        raise ValueError(f"low_res_logits must be (N, K, h, w), got {tuple(low_res_logits.shape)}.")
    if original_hw[0] <= 0 or original_hw[1] <= 0:
        raise ValueError(f"original_hw must be positive, got {original_hw}.")
    top, left = centred_pad_offsets(input_hw, input_px)
    if low_res_logits.shape[0] == 0:
        return low_res_logits.new_zeros(0, low_res_logits.shape[1], *original_hw)
    x = F.interpolate(low_res_logits, (input_px, input_px), mode="bilinear", align_corners=False)
    x = x[..., top : top + input_hw[0], left : left + input_hw[1]]  # (N, K, h_resized, w_resized)
    return F.interpolate(x, tuple(original_hw), mode="bilinear", align_corners=False)
