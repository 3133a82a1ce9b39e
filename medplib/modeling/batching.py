"""Turn training / evaluation samples into model-ready batches.

A `Sample` is one image, its conversation turns, the region masks its questions refer to and
one target mask per `<SEG>` in its answers. `collate` renders the LLaVA-v1 conversation,
tokenises it with sentinels, preprocesses both image branches and maps region masks onto the
CLIP patch grid. `Batch.model_inputs()` is the keyword set of `MedPLIBForCausalLM.forward`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from medplib.conversation import count_region_tags, encode_conversation, normalize_region_tags
from medplib.errors import UserInputError
from medplib.modeling.configuration import MedPLIBConfig
from medplib.modeling.image_processing import preprocess_clip, region_grid_weights, to_rgb_uint8
from medplib.modeling.sam_med2d import SamMed2DConfig
from medplib.modeling.sam_med2d.transforms import preprocess_image, resize_longest_side_hw
from medplib.tokenization import IGNORE_INDEX, SpecialTokenIds


@dataclass
class Sample:
    """One training example."""

    image: np.ndarray  # (H, W, 3) uint8 RGB, or any layout `to_rgb_uint8` accepts
    turns: Sequence[tuple[str, str]]  # (question, answer) pairs; answers may contain <SEG>
    # Bool (H, W) masks in original pixels, in order of the <region> tags over all questions;
    # regions without a tag get one appended to the last question.
    regions: Sequence[np.ndarray] = ()
    # One {0,1} (H, W) mask per <SEG> over all answers, in reading order.
    target_masks: Sequence[np.ndarray] = ()


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) long, right-padded with pad id, with sentinels
    attention_mask: torch.Tensor  # (B, T) long
    labels: torch.Tensor  # (B, T) long, IGNORE_INDEX on prompt / padding
    clip_pixels: torch.Tensor  # (B, 3, S, S) float32
    sam_pixels: torch.Tensor  # (B, 3, S', S') float32
    # Per sample (R_b, N) float32 region weights on the patch grid: area coverage, or the
    # official top-left-pixel cells (see `RegionEncoderConfig.pooling`).
    region_weights: list[torch.Tensor]
    sam_input_hw: list[tuple[int, int]]  # per sample resized SAM size before padding
    original_hw: list[tuple[int, int]]  # per sample (H, W)
    target_masks: list[list[torch.Tensor]] = field(default_factory=list)  # per sample, (H, W) float

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            labels=self.labels.to(device),
            clip_pixels=self.clip_pixels.to(device),
            sam_pixels=self.sam_pixels.to(device),
            region_weights=[w.to(device) for w in self.region_weights],
            sam_input_hw=list(self.sam_input_hw),
            original_hw=list(self.original_hw),
            target_masks=[[m.to(device) for m in ms] for ms in self.target_masks],
        )

    def model_inputs(self) -> dict:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "labels": self.labels,
            "clip_pixels": self.clip_pixels,
            "sam_pixels": self.sam_pixels,
            "region_weights": self.region_weights,
            "sam_input_hw": self.sam_input_hw,
            "original_hw": self.original_hw,
            "target_masks": self.target_masks,
        }


def assign_region_tags(turns: Sequence[tuple[str, str]], num_regions: int) -> list[tuple[str, str]]:
    """Canonicalise region tags over all questions; append missing ones to the last question."""
    counts = [count_region_tags(q) for q, _ in turns]
    if sum(counts) > num_regions:
        raise ValueError(
            f"the questions have {sum(counts)} <region> tags but only {num_regions} regions were given"
        )
    out = []
    for i, ((q, a), n) in enumerate(zip(turns, counts, strict=True)):
        extra = num_regions - sum(counts) if i == len(turns) - 1 else 0
        out.append((normalize_region_tags(q, n + extra), a))
    return out


def clip_and_sam_inputs(image_rgb: np.ndarray, config: MedPLIBConfig):
    """(H, W, 3) uint8 → (clip (3, S, S), clip geometry, sam (3, S', S'), sam resized hw)."""
    v = config.vision
    clip, geo = preprocess_clip(image_rgb, v.image_size, v.image_mean, v.image_std, v.pad_color)
    sam_cfg = SamMed2DConfig.from_dict(config.sam)
    size = sam_cfg.image_encoder.img_size
    hw = resize_longest_side_hw(image_rgb.shape[:2], size)
    small = image_rgb
    if hw != image_rgb.shape[:2]:
        # Resize in uint8 first: the same antialiased bilinear result as resizing inside
        # `preprocess_image`, without a float copy of a (possibly 8192-px) original.
        small = np.array(
            Image.fromarray(image_rgb).resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
        )
    sam = preprocess_image(
        small, target_px=size, pixel_mean=sam_cfg.pixel_mean, pixel_std=sam_cfg.pixel_std
    )
    return clip, geo, sam, hw


def collate(
    samples: Sequence[Sample], tokenizer, config: MedPLIBConfig, max_length: int | None = None
) -> Batch:
    """Build a right-padded batch; `max_length` bounds the expanded sequence (error if exceeded)."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    special = SpecialTokenIds.from_tokenizer(tokenizer, config.seg_token)
    limit = max_length or config.language.max_position_embeddings
    ids_list, lab_list, clips, sams, weights, sam_hw, orig_hw, targets = (
        [],
        [],
        [],
        [],
        [],
        [],
        [],
        [],
    )
    for k, s in enumerate(samples):
        image = to_rgb_uint8(s.image)
        h, w = image.shape[:2]
        turns = assign_region_tags(list(s.turns), len(s.regions))
        ids, labels = encode_conversation(
            tokenizer, turns, use_im_start_end=config.use_im_start_end
        )
        expanded = len(ids) - 1 + config.vision.num_patches
        if expanded > limit:
            raise ValueError(f"sample {k} needs {expanded} tokens, more than max_length {limit}")
        n_seg = sum(
            1
            for t, lab in zip(ids, labels, strict=True)
            if t == special.seg and lab != IGNORE_INDEX
        )
        if n_seg != len(s.target_masks) or ids.count(special.seg) != n_seg:
            raise ValueError(
                f"sample {k} has {ids.count(special.seg)} <SEG> tokens but {len(s.target_masks)} target masks"
            )
        clip, geo, sam, hw = clip_and_sam_inputs(image, config)
        region_w = []
        for m in s.regions:
            m = np.asarray(m).astype(bool)
            if not m.any():
                raise UserInputError(
                    f"region mask of sample {k} is empty; every region needs at least one pixel"
                )
            region_w.append(
                region_grid_weights(m, geo, config.vision.patch_size, config.region.pooling)
            )
        n = config.vision.num_patches
        weights.append(torch.from_numpy(np.stack(region_w)) if region_w else torch.zeros((0, n)))
        for t in s.target_masks:
            if t.shape != (h, w):
                raise ValueError(
                    f"target mask of sample {k} has shape {t.shape}, image is {(h, w)}"
                )
        targets.append([torch.from_numpy(np.asarray(t, dtype=np.float32)) for t in s.target_masks])
        ids_list.append(ids)
        lab_list.append(labels)
        clips.append(clip)
        sams.append(sam)
        sam_hw.append(hw)
        orig_hw.append((h, w))
    length = max(len(i) for i in ids_list)
    input_ids = torch.full((len(samples), length), special.pad, dtype=torch.long)
    attention = torch.zeros((len(samples), length), dtype=torch.long)
    labels_t = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
    for b, (ids, labels) in enumerate(zip(ids_list, lab_list, strict=True)):
        input_ids[b, : len(ids)] = torch.tensor(ids)
        attention[b, : len(ids)] = 1
        labels_t[b, : len(labels)] = torch.tensor(labels)
    return Batch(
        input_ids=input_ids,
        attention_mask=attention,
        labels=labels_t,
        clip_pixels=torch.stack(clips),
        sam_pixels=torch.stack(sams),
        region_weights=weights,
        sam_input_hw=sam_hw,
        original_hw=orig_hw,
        target_masks=targets,
    )
