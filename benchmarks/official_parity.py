"""Compare this project's "official" preprocessing with the released MedPLIB code, in place.

The released code is not part of this repository. Point the script at a checkout you provide
(github.com/ShawnHuang497/MedPLIB); it reads the few functions it needs from that checkout's
files (without importing its package, which needs DeepSpeed and transformers 4.31) and runs
them next to ours on the same inputs:

    python benchmarks/official_parity.py --official ~/src/MedPLIB

- region_pooling: the released `extract_region_feature` (bilinear samples at the region's
  grid cells, align_corners=True, averaged) against `official_sample_weights` on box,
  point-square and free-form masks of at most `max_sample_point` cells (no random subset);
- mask_reduction: the released region-mask path (SAM's `ResizeLongestSide` to 336, zero
  padding, nearest neighbour x 1/14) against `region_cells_official` on non-square images
  (needs torchvision and opencv; skipped without them);
- pad_color: the released CLIP padding colour against `pad_color_255(mean, "official")`.

Prints JSON with one entry per check ("ok", "mismatch" or "skipped" with the reason) and
exits 1 if any check mismatches. Without a checkout it prints why and exits 0. The
whole-model comparison (logits, routing, masks with the released weights) needs the released
environment and is described in docs/fidelity.md.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medplib.modeling.configuration import VisionTowerConfig
from medplib.modeling.image_processing import image_geometry, pad_color_255, region_cells_official
from medplib.modeling.region_encoder import official_sample_weights

ARCH = Path("model/medplib/model/medplib_arch.py")
DATASET = Path("datasets/LazySupervisedDataset.py")
TRANSFORMS = Path("model/segment_anything/utils/transforms.py")
CLIP_SIZE, PATCH = 336, 14
GRID = CLIP_SIZE // PATCH


# ------------------------------------------------------------------------- reading the checkout
def _load_defs(path: Path, names: list[str], namespace: dict[str, Any]) -> dict[str, Any]:
    """Execute only the named top-level functions / classes (or methods, as "Class.method")
    of a source file, in `namespace`; returns name -> object."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            found[node.name] = node
            if isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, ast.FunctionDef):
                        found[f"{node.name}.{sub.name}"] = sub
    out: dict[str, Any] = {}
    for name in names:
        if name not in found:
            raise LookupError(f"{path} has no {name}")
        module = ast.Module(body=[found[name]], type_ignores=[])  # type: ignore[list-item]
        exec(compile(module, str(path), "exec"), namespace)  # noqa: S102 - the user's checkout
        out[name] = namespace[name.rsplit(".", 1)[-1]]
    return out


def _class_attribute(path: Path, cls: str, attr: str, namespace: dict[str, Any]) -> Any:
    """Evaluate the expression assigned to `cls.attr` in a source file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for sub in node.body:
                if isinstance(sub, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == attr for t in sub.targets
                ):
                    expr = ast.Expression(body=sub.value)
                    return eval(compile(expr, str(path), "eval"), namespace)  # noqa: S307
    raise LookupError(f"{path} has no {cls}.{attr}")


# ------------------------------------------------------------------------------- test inputs
def region_masks() -> dict[str, np.ndarray]:
    """Box, point-square (the demo's 41 x 41 px) and free-form masks on a 336 x 336 image."""
    box = np.zeros((CLIP_SIZE, CLIP_SIZE), bool)
    box[60:200, 90:260] = True
    point = np.zeros_like(box)
    point[80:121, 130:171] = True
    yy, xx = np.mgrid[:CLIP_SIZE, :CLIP_SIZE]
    free = ((yy - 200) ** 2 / 70**2 + (xx - 120) ** 2 / 40**2 < 1) | (
        (np.abs(yy - xx - 30) < 6) & (yy < 150)
    )
    return {"box": box, "point": point, "free-form": free}


def non_square_masks() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for h, w in ((512, 384), (200, 700), (1024, 1024), (97, 131)):
        m = np.zeros((h, w), bool)
        y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        m[y0 : y0 + h // 3, x0 : x0 + w // 4] = True
        yy, xx = np.mgrid[:h, :w]
        m |= (yy - h * 0.7) ** 2 + (xx - w * 0.6) ** 2 < (min(h, w) * 0.12) ** 2
        out.append(m)
    return out


# ------------------------------------------------------------------------------------ checks
def check_region_pooling(root: Path, tol: float) -> dict[str, Any]:
    ns: dict[str, Any] = {"torch": torch, "nn": nn, "F": F, "math": math}
    defs = _load_defs(
        root / ARCH,
        ["rand_sample", "point_sample", "LlavaMetaForCausalLM.extract_region_feature"],
        ns,
    )
    extract: Callable[..., Any] = defs["LlavaMetaForCausalLM.extract_region_feature"]
    model = SimpleNamespace(max_sample_point=512)
    stub = SimpleNamespace(get_model=lambda: model)
    gen = torch.Generator().manual_seed(0)
    fmap = torch.randn(GRID * GRID, 64, generator=gen)  # (N, D) adapted region feature map
    worst, per_mask = 0.0, {}
    for name, mask in region_masks().items():
        cells = region_cells_official(mask, image_geometry(CLIP_SIZE, CLIP_SIZE, CLIP_SIZE), PATCH)
        grid_mask = torch.from_numpy(cells.reshape(GRID, GRID))  # (24, 24) 0/1
        theirs = extract(stub, fmap[None], [[grid_mask]], torch.float32, torch.float32)[0][0]
        picked = torch.nonzero(torch.from_numpy(cells) > 0).squeeze(-1)
        ours = (official_sample_weights(picked, GRID) @ fmap.double()).float()
        err = float((theirs - ours).abs().max() / theirs.abs().max())
        per_mask[name] = {"cells": int(picked.numel()), "max_rel_diff": err}
        worst = max(worst, err)
    return {"status": "ok" if worst <= tol else "mismatch", "tolerance": tol, "masks": per_mask}


def check_mask_reduction(root: Path) -> dict[str, Any]:
    missing = [m for m in ("torchvision", "cv2") if importlib.util.find_spec(m) is None]
    if missing:
        return {"status": "skipped", "reason": f"needs {' and '.join(missing)}"}
    import copy

    import cv2
    from torchvision.transforms.functional import resize, to_pil_image

    ns: dict[str, Any] = {
        "np": np,
        "torch": torch,
        "F": F,
        "deepcopy": copy.deepcopy,
        "resize": resize,
        "to_pil_image": to_pil_image,
        "Tuple": tuple,
    }
    resize_cls = _load_defs(root / TRANSFORMS, ["ResizeLongestSide"], ns)["ResizeLongestSide"]
    transform = resize_cls(CLIP_SIZE)
    differing = []
    for k, mask in enumerate(non_square_masks()):
        small = transform.apply_image(mask.astype(np.uint8))  # (h, w) 0/1
        h, w = small.shape
        top, left = (CLIP_SIZE - h) // 2, (CLIP_SIZE - w) // 2
        padded = np.zeros((CLIP_SIZE, CLIP_SIZE), small.dtype)
        padded[top : top + h, left : left + w] = small
        grid = cv2.resize(padded, None, fx=1 / PATCH, fy=1 / PATCH, interpolation=cv2.INTER_NEAREST)
        theirs = (grid > 0).reshape(-1)
        ours = region_cells_official(mask, image_geometry(*mask.shape, CLIP_SIZE), PATCH) > 0
        differing.append(
            {"mask": k, "shape": list(mask.shape), "cells_differ": int((theirs != ours).sum())}
        )
    bad = any(d["cells_differ"] for d in differing)
    return {"status": "mismatch" if bad else "ok", "masks": differing}


def check_pad_color(root: Path) -> dict[str, Any]:
    theirs = _class_attribute(
        root / DATASET, "LazySupervisedDataset", "clip_pixel_mean", {"torch": torch}
    )
    theirs = [float(v) for v in torch.as_tensor(theirs).reshape(-1)]
    vision = VisionTowerConfig()
    ours = pad_color_255(vision.image_mean, "official").tolist()
    return {"status": "ok" if theirs == ours else "mismatch", "official": theirs, "ours": ours}


CHECKS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "region_pooling": lambda root: check_region_pooling(root, tol=1e-6),
    "mask_reduction": check_mask_reduction,
    "pad_color": check_pad_color,
}


def run(root: Path) -> tuple[dict[str, Any], int]:
    if not (root / ARCH).is_file():
        return {"skipped": f"no MedPLIB checkout at {root} (expected {ARCH} there)"}, 0
    results: dict[str, Any] = {}
    for name, check in CHECKS.items():
        try:
            results[name] = check(root)
        except (LookupError, OSError, SyntaxError) as exc:
            results[name] = {"status": "skipped", "reason": f"{type(exc).__name__}: {exc}"}
    code = 1 if any(r["status"] == "mismatch" for r in results.values()) else 0
    return {"official": str(root), "checks": results}, code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True, help="a MedPLIB checkout")
    args = parser.parse_args(argv)
    report, code = run(args.official.expanduser())
    print(json.dumps(report, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())
