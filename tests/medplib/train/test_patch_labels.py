"""Patch-label supervision of CLIP: the targets, the loss, and a stage trained with it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from train_helpers import stage_dict

from medplib.errors import UserInputError
from medplib.train import config_from_dict, run_stage
from medplib.train.logbook import read_metrics
from medplib.train.patch_labels import (
    HEAD_NAME,
    PatchLabelHead,
    PatchLabelIndex,
    coverage_targets,
    grid_position_targets,
    patch_label_loss,
)


def test_coverage_targets_are_patch_fractions_per_class():
    # 32 × 32 image, 32 px model input in 16 px patches: a 2 × 2 grid, patches in row order.
    left_half = np.zeros((32, 32), bool)
    left_half[:, :16] = True
    corner = np.zeros((32, 32), bool)
    corner[:8, 24:] = True  # a quarter of the top-right patch
    overlap = np.zeros((32, 32), bool)
    overlap[:8, 28:] = True  # inside `corner`: the class's union is still a quarter patch
    out = coverage_targets(
        {0: [left_half], 2: [corner, overlap]},
        height_px=32,
        width_px=32,
        image_size_px=32,
        patch_size_px=16,
        num_classes=3,
    )
    assert out.shape == (4, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], [1, 0, 1, 0])
    np.testing.assert_allclose(out[:, 1], [0, 0, 0, 0])
    np.testing.assert_allclose(out[:, 2], [0, 0.25, 0, 0])


def test_coverage_targets_follow_the_padding_of_a_wide_image():
    # 16 × 32 (H × W) image → resized 16 × 32 inside a 32 px square, padded 8 px top and
    # bottom: the image's top row of pixels falls into the grid's top row of patches.
    top_rows = np.zeros((16, 32), bool)
    top_rows[:8] = True  # covers y 8..16 of the square: half of each top patch
    out = coverage_targets(
        {0: [top_rows]},
        height_px=16,
        width_px=32,
        image_size_px=32,
        patch_size_px=16,
        num_classes=1,
    )
    np.testing.assert_allclose(out[:, 0], [0.5, 0.5, 0, 0])


def test_grid_position_targets_are_row_then_column_one_hots():
    out = grid_position_targets(3)
    assert out.shape == (9, 6)
    # Patch 5 is row 1, column 2 of the 3 × 3 grid.
    np.testing.assert_array_equal(out[5], [0, 1, 0, 0, 0, 1])
    np.testing.assert_array_equal(out[:, :3].sum(0), [3, 3, 3])
    np.testing.assert_array_equal(out.sum(1), np.full(9, 2))


def _fake_corpus(root: Path) -> Path:
    (root / "masks").mkdir(parents=True)
    (root / "classes.json").write_text(json.dumps({"0002": "spleen", "0001": "liver"}))
    liver = np.zeros((32, 32), np.uint8)
    liver[16:, :] = 255
    Image.fromarray(liver).save(root / "masks" / "ct_00--synthetic--a--0001_000.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(
        root / "masks" / "ct_00--synthetic--b--0002_000.png"
    )
    (root / "masks" / "notes.txt").write_text("not a mask")
    return root


def test_index_reads_mask_names_and_builds_targets(tmp_path: Path):
    index = PatchLabelIndex.from_corpus(_fake_corpus(tmp_path))
    assert index.class_ids == ["0001", "0002"]  # sorted ids: column 0 is the liver
    assert index.num_classes == 2 and index.num_outputs(grid=2) == 6
    geometry = {"height_px": 32, "width_px": 32, "image_size_px": 32, "patch_size_px": 16}
    a = index.targets("images/ct_00--synthetic--a.png", **geometry)
    assert a.shape == (4, 6)
    np.testing.assert_allclose(a[:, :2], [[0, 0], [0, 0], [1, 0], [1, 0]])
    np.testing.assert_allclose(a[:, 2:], grid_position_targets(2))
    b = index.targets("images/ct_00--synthetic--b.png", **geometry)
    assert not b[:, :2].any() and np.array_equal(b[:, 2:], grid_position_targets(2))
    assert not index.targets("images/no-masks.png", **geometry)[:, :2].any()
    classes_only = PatchLabelIndex.from_corpus(tmp_path, position=False)
    assert classes_only.num_outputs(grid=2) == 2
    np.testing.assert_allclose(
        classes_only.targets("images/ct_00--synthetic--a.png", **geometry), a[:, :2]
    )
    with pytest.raises(UserInputError, match="rebuild the corpus"):
        index.targets("images/ct_00--synthetic--a.png", **{**geometry, "height_px": 16})


def test_index_without_masks_is_refused(tmp_path: Path):
    with pytest.raises(UserInputError, match="classes.json"):
        PatchLabelIndex.from_corpus(tmp_path)


def test_loss_is_bce_summed_over_classes_and_averaged_over_patches():
    logits = torch.tensor([[[2.0, -1.0], [0.0, 3.0]]])  # (B 1, N 2, K 2)
    targets = torch.tensor([[[1.0, 0.0], [0.5, 1.0]]])
    manual = (
        -(
            torch.log(torch.sigmoid(torch.tensor(2.0)))
            + torch.log(1 - torch.sigmoid(torch.tensor(-1.0)))
            + (0.5 * torch.log(torch.tensor(0.5)) * 2)
            + torch.log(torch.sigmoid(torch.tensor(3.0)))
        )
        / 2
    )
    assert float(patch_label_loss(logits, targets)) == pytest.approx(float(manual), rel=1e-6)
    right = patch_label_loss(torch.tensor([[[9.0, -9.0]]]), torch.tensor([[[1.0, 0.0]]]))
    wrong = patch_label_loss(torch.tensor([[[-9.0, 9.0]]]), torch.tensor([[[1.0, 0.0]]]))
    assert float(right) < 1e-3 < 17 < float(wrong)


def test_head_creation_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    a = PatchLabelHead(8, 4, seed=1)
    after = torch.rand(3)
    b = PatchLabelHead(8, 4, seed=1)
    assert torch.equal(expected, after)
    assert torch.equal(a.weight, b.weight) and a.weight.shape == (4, 8)


def test_config_refuses_a_negative_weight_and_keeps_old_fingerprints():
    off = config_from_dict(stage_dict("vl"))
    shaping = off.to_dict()
    shaping["data"].pop("num_workers")
    shaping.pop("patch_labels")
    shaping.pop("attention_labels")  # newer and off: also left out
    shaping["data"].pop("question_kinds")  # newer and empty: also left out
    shaping["data"].pop("sources")  # likewise
    shaping.pop("augment")  # likewise
    before = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]
    assert off.fingerprint() == before
    on = config_from_dict(stage_dict("vl", patch_labels={"weight": 1.0}))
    assert on.fingerprint() != before
    with pytest.raises(UserInputError, match="patch_labels.weight"):
        config_from_dict(stage_dict("vl", patch_labels={"weight": -1.0})).validate()


def test_align_then_vl_train_the_probe_and_carry_it_over(
    corpus: Path, align_dir: Path, tmp_path: Path
):
    align_out, vl_out = tmp_path / "align", tmp_path / "vl"
    run_stage(
        config_from_dict(stage_dict("align", patch_labels={"weight": 1.0})),
        corpus,
        align_out,
        progress=False,
    )
    rows = [r for r in read_metrics(align_out / "metrics.jsonl") if r["kind"] == "train"]
    assert rows[-1]["patch"] < 0.5 * rows[0]["patch"], [r["patch"] for r in rows]
    head = load_file(align_out / HEAD_NAME)
    # The probe is a training aid: the checkpoint itself holds no trace of it.
    plain = load_file(align_dir / "model.safetensors")  # the same stage without the probe
    assert set(load_file(align_out / "model.safetensors")) == set(plain)
    vl_modules = [*stage_dict("vl")["train_modules"], "vision_tower.*"]
    run_stage(
        config_from_dict(stage_dict("vl", patch_labels={"weight": 1.0}, train_modules=vl_modules)),
        corpus,
        vl_out,
        init_dir=align_out,
        progress=False,
    )
    vl_rows = [r for r in read_metrics(vl_out / "metrics.jsonl") if r["kind"] == "train"]
    # Continued, not restarted: vl's first steps already score like align's last ones.
    assert vl_rows[0]["patch"] < 0.5 * rows[0]["patch"]
    vl_head = load_file(vl_out / HEAD_NAME)
    assert not torch.equal(head["weight"], vl_head["weight"])


def test_resumed_run_ends_with_the_same_model_and_probe(corpus: Path, tmp_path: Path):
    cfg = config_from_dict(
        stage_dict(
            "align",
            steps=4,
            patch_labels={"weight": 1.0},
            loop={"steps": 4, "batch_size": 2, "checkpoint_every": 2, "log_every": 1},
        )
    )
    run_stage(cfg, corpus, tmp_path / "whole", progress=False)
    cut = run_stage(cfg, corpus, tmp_path / "cut", progress=False, stop_after=2)
    assert not cut.complete
    run_stage(cfg, corpus, tmp_path / "cut", resume=True, progress=False)
    for name in ("model.safetensors", HEAD_NAME):
        a, b = load_file(tmp_path / "whole" / name), load_file(tmp_path / "cut" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
