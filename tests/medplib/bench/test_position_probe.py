"""benchmarks/position_probe.py: the probe reads position where the features hold it, and only there."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from script_helpers import load_benchmark

from medplib.modeling.presets import build_config


@pytest.fixture(scope="module")
def probe():
    return load_benchmark("position_probe")


def test_probe_accuracy_separates_labels_the_features_encode(probe):
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (400,), generator=gen)
    x = torch.nn.functional.one_hot(y, 4).float() + 0.3 * torch.randn(400, 4, generator=gen)
    assert probe.probe_accuracy(x[:200], y[:200], x[200:], y[200:]) > 0.95


def test_probe_accuracy_is_near_chance_on_features_unrelated_to_the_labels(probe):
    gen = torch.Generator().manual_seed(1)
    y = torch.randint(0, 2, (2000,), generator=gen)
    x = torch.randn(2000, 8, generator=gen)
    assert 0.4 < probe.probe_accuracy(x[:1000], y[:1000], x[1000:], y[1000:]) < 0.6


class _FakeModel:
    """Stands in for a checkpoint: CLIP patches carry their grid column (not the row), visual
    tokens nothing about where they are."""

    def __init__(self) -> None:
        self.config = build_config("tiny")
        vision = self.config.vision
        self.grid = vision.image_size // vision.patch_size
        self.n_patch = self.grid**2
        self.gen = torch.Generator().manual_seed(2)

    def eval(self) -> _FakeModel:
        return self

    def encode_clip(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = pixels.shape[0]
        column = torch.arange(self.n_patch) % self.grid
        where = torch.eye(self.grid)[column].expand(b, -1, -1)  # (B, N, G) one-hot column
        patches = where + 0.05 * torch.randn(b, self.n_patch, self.grid, generator=self.gen)
        tokens = torch.randn(b, self.n_patch, 16, generator=self.gen)  # (B, N, 16) no position
        return patches, tokens


def test_main_scores_position_from_each_feature_set(probe, tmp_path: Path, monkeypatch, capsys):
    corpus = tmp_path / "corpus"
    (corpus / "images").mkdir(parents=True)
    (corpus / "vqa").mkdir()
    rng = np.random.default_rng(0)
    records = []
    for i in range(24):
        rel = f"images/s{i:02d}.png"
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(corpus / rel)
        records.append({"image": rel, "source": "synthetic"})
    records.append({"image": "images/real.png", "source": "busi"})  # not synthetic: not read
    (corpus / "vqa" / "val.json").write_text(json.dumps(records))
    fake = _FakeModel()
    monkeypatch.setattr(probe, "load_pretrained", lambda *a, **k: (fake, None, None))

    assert probe.main(["--checkpoint", "x", "--corpus", str(corpus), "--images", "20"]) == 0
    result = json.loads(capsys.readouterr().out)

    assert result["images"] == 20 and result["grid"] == 8
    assert result["chance"] == {"column": 0.125, "row": 0.125, "half": 0.5}
    clip = result["clip_patches"]
    assert clip["column"] > 0.95 and clip["half"] > 0.95 and clip["row"] < 0.3
    tokens = result["visual_tokens"]
    assert tokens["column"] < 0.3 and tokens["row"] < 0.3 and tokens["half"] < 0.65
