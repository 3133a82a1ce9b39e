"""Patch-label supervision of the CLIP tower, for presets whose CLIP starts from random weights.

A published CLIP has seen hundreds of millions of images; the tiny preset's CLIP starts from
random weights and otherwise learns only through the answers' cross-entropy, which reaches a
single patch weakly. This auxiliary objective gives a linear probe on the CLIP patch features
the corpus's exact masks: for every patch, the fraction of it each named structure covers
(soft multi-label BCE), so the visual tokens say *what* is there before the language model has
to read it; and the patch's own row and column of the grid (one-hot), so they also say
*where*. Trained from random weights on answers alone, the tiny CLIP kept almost no trace of a
patch's position (a linear probe on its visual tokens told left half from right half for 0.58
of the patches; chance is 0.5), and the language model could not tell on which side of the
image a finding lay unless the anatomy gave it away. The probe is a training-only head; checkpoints never hold it (stage folders keep it
in `patch_head.safetensors` so the next stage can continue it).

Mask files are named ``{image stem}--{class id}_{instance}.png`` (``medplib data build``), and
``classes.json`` maps the 4-digit class ids to names; the targets follow from those alone.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medplib.data.files import load_mask
from medplib.data.merge_masks import find_instance_groups
from medplib.errors import UserInputError
from medplib.modeling.image_processing import image_geometry, region_patch_weights

HEAD_NAME = "patch_head.safetensors"


def coverage_targets(
    masks_by_class: dict[int, list[np.ndarray]],
    *,
    height_px: int,
    width_px: int,
    image_size_px: int,
    patch_size_px: int,
    num_classes: int,
) -> np.ndarray:
    """(N, num_classes) float32: the fraction of each CLIP patch each class's masks cover.

    Instances of one class are merged first (two touching cysts cover a patch once).
    """
    geometry = image_geometry(height_px, width_px, image_size_px)
    grid = image_size_px // patch_size_px
    out = np.zeros((grid * grid, num_classes), dtype=np.float32)
    for cls, masks in masks_by_class.items():
        union = np.zeros((height_px, width_px), dtype=bool)
        for m in masks:
            union |= np.asarray(m) > 0
        if union.any():
            out[:, cls] = region_patch_weights(union, geometry, patch_size_px)
    return out


def grid_position_targets(grid: int) -> np.ndarray:
    """(grid², 2·grid) float32: one-hot row, then one-hot column, of each patch (row order)."""
    cells = np.arange(grid * grid)
    out = np.zeros((grid * grid, 2 * grid), dtype=np.float32)
    out[cells, cells // grid] = 1.0
    out[cells, grid + cells % grid] = 1.0
    return out


class PatchLabelIndex:
    """Which masks of the corpus belong to which image, and their patch-coverage targets."""

    def __init__(
        self,
        data_dir: Path,
        class_ids: list[str],
        masks_by_stem: dict[str, list[tuple[int, str]]],
        cache_size: int = 8192,
        position: bool = True,
        class_names: list[str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.position = position
        self.class_ids = class_ids
        # Names in the order of `class_ids` (the coverage columns); "" where unknown.
        self.class_names = class_names if class_names is not None else [""] * len(class_ids)
        self.masks_by_stem = masks_by_stem
        # Targets are (64, K) floats per image: the whole tiny corpus fits in ~100 MB.
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    def num_outputs(self, grid: int) -> int:
        """Probe outputs: one per class, then (with `position`) the grid row and column one-hots."""
        return self.num_classes + (2 * grid if self.position else 0)

    @classmethod
    def from_corpus(
        cls, data_dir: Path, position: bool = True, setting: str = "patch_labels"
    ) -> PatchLabelIndex:
        """Read ``classes.json`` and the names under ``masks/``; raise UserInputError if absent.

        `setting` is the config section that asked for them, named in the error.
        """
        classes_path, masks_dir = data_dir / "classes.json", data_dir / "masks"
        if not classes_path.is_file() or not masks_dir.is_dir():
            raise UserInputError(
                f"{setting}.weight > 0 needs {classes_path} and {masks_dir}/ "
                f"(a folder made by `medplib data build`); set {setting}.weight to 0."
            )
        names = json.loads(classes_path.read_text(encoding="utf-8"))
        class_ids = sorted(names)
        column = {cid: i for i, cid in enumerate(class_ids)}
        masks_by_stem: dict[str, list[tuple[int, str]]] = {}
        groups, _ = find_instance_groups(masks_dir)  # files named otherwise are not masks
        for (stem, cid), paths in groups.items():
            if cid in column:
                masks_by_stem.setdefault(stem, []).extend((column[cid], p.name) for p in paths)
        return cls(
            data_dir,
            class_ids,
            masks_by_stem,
            position=position,
            class_names=[str(names[c]) for c in class_ids],
        )

    def targets(
        self,
        image_path: str,
        *,
        height_px: int,
        width_px: int,
        image_size_px: int,
        patch_size_px: int,
    ) -> np.ndarray:
        """(N, K) targets of one corpus image: class coverage (all zeros if it has no masks),
        then, with `position`, the patches' grid rows and columns (`grid_position_targets`)."""
        stem = Path(image_path).stem
        key = f"{stem}|{height_px}x{width_px}|{image_size_px}/{patch_size_px}"
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        by_class: dict[int, list[np.ndarray]] = {}
        for cls, name in self.masks_by_stem.get(stem, []):
            mask = load_mask(self.data_dir / "masks" / name)
            if mask.shape != (height_px, width_px):
                raise UserInputError(
                    f"mask masks/{name} is {mask.shape[1]}x{mask.shape[0]} px but its image "
                    f"{image_path} is {width_px}x{height_px}; rebuild the corpus."
                )
            by_class.setdefault(cls, []).append(mask)
        coverage = coverage_targets(
            by_class,
            height_px=height_px,
            width_px=width_px,
            image_size_px=image_size_px,
            patch_size_px=patch_size_px,
            num_classes=self.num_classes,
        )
        out = coverage
        if self.position:
            grid = grid_position_targets(image_size_px // patch_size_px)
            out = np.concatenate([coverage, grid], axis=1)
        self._cache[key] = out
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out


class PatchLabelHead(nn.Module):
    """Linear probe: CLIP patch features (B, N, C_clip) → logits (B, N, K) of the targets."""

    def __init__(self, in_features: int, num_outputs: int, seed: int) -> None:
        super().__init__()
        # Its own generator, and no nn.Linear (whose constructor draws from the global RNG):
        # creating the head must not shift the random stream the rest of the stage uses.
        g = torch.Generator().manual_seed(seed)
        bound = in_features**-0.5
        weight = (torch.rand(num_outputs, in_features, generator=g) * 2 - 1) * bound
        self.weight = nn.Parameter(weight)  # (K, C_clip)
        self.bias = nn.Parameter(torch.zeros(num_outputs))  # (K,)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return F.linear(patches.float(), self.weight, self.bias)


def patch_label_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE summed over outputs, averaged over patches: each patch is one multi-label example.

    logits, targets: (B, N, K); targets are in [0, 1] (coverage fractions, one-hots).
    """
    per_element = F.binary_cross_entropy_with_logits(
        logits, targets.to(logits.dtype), reduction="none"
    )  # (B, N, K)
    return per_element.sum(-1).mean()
