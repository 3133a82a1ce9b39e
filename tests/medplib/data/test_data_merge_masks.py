"""merge-masks: class masks are the union of SA-Med2D instance masks, byte-stable across reruns."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from data_helpers import class_ids, record, write_json, write_png
from PIL import Image

from medplib.cli import main
from medplib.data import load_mask, merge_masks, read_mecovqa
from medplib.errors import UserInputError

PELVIS = "ct_00--TotalSegmentator--s0619--z_0032"


@pytest.fixture
def root(samed2d_root: Path, tmp_path: Path) -> Path:
    return shutil.copytree(samed2d_root, tmp_path / "root")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_class_mask_is_the_union_of_its_instances(root: Path):
    report = merge_masks(root)
    hip = class_ids()["hip left"]
    a = load_mask(root / f"masks/{PELVIS}--{hip:04d}_000.png")
    b = load_mask(root / f"masks/{PELVIS}--{hip:04d}_001.png")
    assert a.sum() > 0 and b.sum() > 0 and not np.array_equal(a, b)
    merged_path = root / f"masks_merged/{PELVIS}--{hip:04d}_merged.png"
    merged = Image.open(merged_path)
    assert merged.mode == "L" and set(np.unique(np.asarray(merged)).tolist()) == {0, 255}
    assert np.array_equal(np.asarray(merged) > 0, a | b)
    # 30 instance masks in 28 (image, class) groups: left and right hip have two each
    assert (report.groups, report.written, report.instances) == (28, 28, 30)
    assert report.problems == [] and report.resized == 0 and report.ignored == 0


def test_single_instance_class_equals_its_instance(root: Path):
    merge_masks(root)
    liver = class_ids()["liver"]
    stem = "ct_00--AMOS--amos_0004--z_0075"
    merged = load_mask(root / f"masks_merged/{stem}--{liver:04d}_merged.png")
    assert np.array_equal(merged, load_mask(root / f"masks/{stem}--{liver:04d}_000.png"))


def test_rerun_writes_identical_bytes(root: Path, tmp_path: Path):
    merge_masks(root)
    first = _files(root / "masks_merged")
    merge_masks(root, tmp_path / "again")
    assert _files(tmp_path / "again") == first
    merge_masks(root)
    assert _files(root / "masks_merged") == first


def test_unreadable_instance_is_skipped_and_reported(root: Path):
    hip = class_ids()["hip right"]
    (root / f"masks/{PELVIS}--{hip:04d}_001.png").write_bytes(b"broken")
    (root / "masks/readme.txt").write_text("not a mask")
    report = merge_masks(root)
    assert len(report.problems) == 1 and f"{hip:04d}_001.png: skipped" in report.problems[0]
    assert report.ignored == 1 and report.written == 28
    merged = load_mask(root / f"masks_merged/{PELVIS}--{hip:04d}_merged.png")
    assert np.array_equal(merged, load_mask(root / f"masks/{PELVIS}--{hip:04d}_000.png"))


def test_instance_of_another_size_is_resized_to_the_image(root: Path):
    colon = class_ids()["colon"]
    path = root / f"masks/{PELVIS}--{colon:04d}_000.png"
    original = load_mask(path)  # (155, 225)
    big = np.asarray(Image.fromarray(original).resize((450, 310), Image.NEAREST))
    write_png(path, big.astype(np.uint8) * 255)
    report = merge_masks(root)
    assert report.resized == 1
    merged = load_mask(root / f"masks_merged/{PELVIS}--{colon:04d}_merged.png")
    assert merged.shape == original.shape
    assert (merged & original).sum() / (merged | original).sum() > 0.95


def test_merged_masks_are_readable_as_grounding_targets(root: Path, tmp_path: Path):
    merge_masks(root)
    hip = class_ids()["hip left"]
    rec = record(
        f"images/{PELVIS}.png",
        "<image>\nPlease generate a mask that segments the left hip in this image.",
        f"<SEG><mask>masks_merged/{PELVIS}--{hip:04d}_merged.png</mask>",
    )
    report = read_mecovqa(write_json(tmp_path / "g.json", [rec]), root)
    assert report.problems == [] and report.samples[0].task == "grounding"


def test_missing_masks_folder_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserInputError, match="masks is not a folder"):
        merge_masks(tmp_path)


def test_cli_merge_masks(root: Path, tmp_path: Path, capsys):
    out = tmp_path / "merged"
    assert main(["data", "merge-masks", "--images", str(root), "--out", str(out)]) == 0
    assert "28 class masks written" in capsys.readouterr().out
    assert len(list(out.iterdir())) == 28
    assert main(["data", "merge-masks", "--images", str(tmp_path / "nowhere")]) == 2
