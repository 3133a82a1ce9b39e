"""Class-level masks for MeCoVQA-G: the union of SA-Med2D-20M's per-instance masks.

SA-Med2D ships one mask per instance, ``masks/{stem}--{class:04d}_{instance:03d}.png``.
MeCoVQA-G answers point at ``masks_merged/{stem}--{class}_merged.png``, the pixel-wise OR of
every instance of that class in that image, which SA-Med2D does not ship. `merge_masks` builds
them: inputs in sorted order, outputs 8-bit 0/255 PNGs without metadata, so a rerun writes the
same bytes.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medplib.data.files import (
    FileReadError,
    image_size_hw,
    png_bytes,
    read_mask,
)
from medplib.errors import UserInputError
from medplib.masks import resize_mask_nearest

INSTANCE_NAME = re.compile(r"^(?P<stem>.+)--(?P<cls>\d{4})_(?P<inst>\d{3})\.png$")


@dataclass
class MergeReport:
    groups: int = 0  # (image, class) pairs found
    written: int = 0  # class masks written (or already identical on disk)
    instances: int = 0  # instance masks merged
    ignored: int = 0  # files in masks/ not named like an SA-Med2D instance mask
    resized: int = 0  # instances resized (nearest) to their image's size
    problems: list[str] = field(default_factory=list)


def merged_name(stem: str, class_id: str) -> str:
    return f"{stem}--{class_id}_merged.png"


def find_instance_groups(masks_dir: Path) -> tuple[dict[tuple[str, str], list[Path]], int]:
    """Instance masks grouped by (image stem, 4-digit class id), each group sorted by name."""
    groups: dict[tuple[str, str], list[Path]] = defaultdict(list)
    ignored = 0
    for path in sorted(masks_dir.iterdir()):
        m = INSTANCE_NAME.match(path.name)
        if m is None or not path.is_file():
            ignored += 1
            continue
        groups[(m["stem"], m["cls"])].append(path)
    return dict(sorted(groups.items())), ignored


def _target_hw(image_root: Path, stem: str) -> tuple[int, int] | None:
    path = image_root / "images" / f"{stem}.png"
    if not path.is_file():
        return None
    try:
        return image_size_hw(path)
    except FileReadError:
        return None


def merge_masks(image_root: str | Path, out_dir: str | Path | None = None) -> MergeReport:
    """Write ``{out_dir}/{stem}--{class}_merged.png`` for every (image, class) under `image_root`/masks.

    `out_dir` defaults to ``image_root/masks_merged``. Unreadable instances are skipped and
    reported; instances of another size than their image are resized (nearest) and counted.
    """
    root = Path(image_root)
    masks_dir = root / "masks"
    if not masks_dir.is_dir():
        raise UserInputError(
            f"{masks_dir} is not a folder; pass the SA-Med2D root that holds images/ and masks/."
        )
    out = Path(out_dir) if out_dir is not None else root / "masks_merged"
    groups, ignored = find_instance_groups(masks_dir)
    report = MergeReport(groups=len(groups), ignored=ignored)
    out.mkdir(parents=True, exist_ok=True)
    for (stem, class_id), paths in groups.items():
        hw = _target_hw(root, stem)
        union: np.ndarray | None = None
        for path in paths:
            try:
                mask = read_mask(path).mask  # (H, W) bool
            except FileReadError as exc:
                report.problems.append(f"{path.name}: skipped, {exc}")
                continue
            hw = hw or mask.shape
            if mask.shape != hw:
                mask = resize_mask_nearest(mask, hw)
                report.resized += 1
            union = mask if union is None else union | mask
            report.instances += 1
        name = merged_name(stem, class_id)
        if union is None:
            report.problems.append(f"{name}: not written, no readable instance mask")
            continue
        if not union.any():
            report.problems.append(f"{name}: not written, every instance mask is empty")
            continue
        data = png_bytes(union)
        target = out / name
        if not (target.is_file() and target.read_bytes() == data):
            target.write_bytes(data)
        report.written += 1
    return report
