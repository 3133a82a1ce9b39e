"""benchmarks/official_parity.py: skips without a checkout, and tells a faithful stand-in of
the released functions from a subtly different one.

The stand-in checkout below is written here from the released behaviour as documented in
docs/fidelity.md (it is not the released code): bilinear samples at cell / 24 with
align_corners=True, averaged; the CLIP mean x 255 truncated as padding colour.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from script_helpers import load_benchmark

ARCH = """
import math
import torch
import torch.nn.functional as F
from torch import nn

from some.package.only.the.released.environment.has import Nothing  # never imported


def rand_sample(x, max_len):
    return x if x.shape[0] <= max_len else x[torch.randperm(x.shape[0])[:max_len]]


def point_sample(input, point_coords, return_dtype, **kwargs):
    out = F.grid_sample(input.float(), (2.0 * point_coords[:, :, None] - 1.0).float(), **kwargs)
    return out[..., 0].to(return_dtype)


class LlavaMetaForCausalLM:
    def extract_region_feature(self, region_feature_map, region_masks, original_dtype, return_dtype):
        feats = []
        for fmap, masks in zip(region_feature_map, region_masks):
            side = int(math.sqrt(fmap.shape[0]))
            grid = fmap.reshape(side, side, -1).permute(2, 0, 1)[None]
            rows = []
            for m in masks:
                pts = rand_sample(m.nonzero() / side, self.get_model().max_sample_point)
                out = point_sample(grid, pts.flip(-1)[None], return_dtype, align_corners=ALIGN)
                rows.append(out[0].mean(dim=-1))
            feats.append(torch.stack(rows))
        return feats
"""

DATASET = """
import torch


class LazySupervisedDataset:
    clip_pixel_mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).mul(255).int()
"""


@pytest.fixture(scope="module")
def parity():
    return load_benchmark("official_parity")


def _checkout(root: Path, align_corners: bool) -> Path:
    arch = root / "model" / "medplib" / "model" / "medplib_arch.py"
    arch.parent.mkdir(parents=True)
    arch.write_text(ARCH.replace("ALIGN", str(align_corners)))
    data = root / "datasets" / "LazySupervisedDataset.py"
    data.parent.mkdir(parents=True)
    data.write_text(DATASET)
    return root


def test_skips_cleanly_without_a_checkout(parity, tmp_path, capsys):
    assert parity.main(["--official", str(tmp_path / "nowhere")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "no MedPLIB checkout" in report["skipped"]


def test_faithful_stand_in_passes(parity, tmp_path, capsys):
    root = _checkout(tmp_path / "MedPLIB", align_corners=True)
    assert parity.main(["--official", str(root)]) == 0
    checks = json.loads(capsys.readouterr().out)["checks"]
    assert checks["region_pooling"]["status"] == "ok"
    assert set(checks["region_pooling"]["masks"]) == {"box", "point", "free-form"}
    for result in checks["region_pooling"]["masks"].values():
        assert 0 < result["cells"] <= 512 and result["max_rel_diff"] <= 1e-6
    assert checks["pad_color"] == {
        "status": "ok",
        "official": [122.0, 116.0, 104.0],
        "ours": [122.0, 116.0, 104.0],
    }
    # No SAM transforms file in the stand-in (and no torchvision / opencv here).
    assert checks["mask_reduction"]["status"] == "skipped"


def test_align_corners_false_is_caught(parity, tmp_path, capsys):
    root = _checkout(tmp_path / "MedPLIB", align_corners=False)
    assert parity.main(["--official", str(root)]) == 1
    checks = json.loads(capsys.readouterr().out)["checks"]
    assert checks["region_pooling"]["status"] == "mismatch"
