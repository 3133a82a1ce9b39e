"""Real-data reader: splits come from splits.csv, labels from the manifests, volumes are sliced."""

from __future__ import annotations

import csv
import gzip
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from data_helpers import REALDATA, needs_realdata, write_png

from medplib.data import realdata
from medplib.data.realdata import iter_realdata, label_text, read_credits, read_nrrd


@pytest.fixture(scope="module")
def real_items():
    needs_realdata()
    notes: list[str] = []
    return list(iter_realdata(REALDATA, notes)), notes


def _manifest(source: str) -> list[dict]:
    with (REALDATA / source / "manifest.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize(
    ("raw", "text"),
    [("kidney_right", "right kidney"), ("lung_upper_lobe_left", "left lung upper lobe"),
     ("rib left 9", "left rib 9"), ("left+kidney", "left kidney"), ("vertebrae_T9", "vertebrae T9"),
     ("liver", "liver")],
)  # fmt: skip
def test_label_text(raw: str, text: str):
    assert label_text(raw) == text


def test_every_item_carries_the_split_of_its_source_file(real_items):
    items, _ = real_items
    with (REALDATA / "splits.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_file = {f"{r['source']}/{r['image'].split(':')[0]}": r["split"] for r in rows}
    for item in items:
        assert by_file[item.origin] == item.split, item.origin
    splits = {(i.source, i.split) for i in items}
    assert ("sam-med2d-demo", "train") in splits and ("busi-mini", "holdout") in splits
    assert ("kvasir-seg-mini", "zero-shot") in splits and (
        "pyradiomics-testcases",
        "zero-shot",
    ) in splits
    assert ("totalsegmentator-example", "train") in splits
    assert ("totalsegmentator-example", "holdout") in splits


def test_images_are_shrunk_to_256_and_masks_follow(real_items):
    items, _ = real_items
    for item in items:
        h, w = item.scene.image.shape[:2]
        assert max(h, w) <= 256 and item.scene.image.dtype == np.uint8
        for obj in item.scene.objects:
            assert obj.mask.shape == (h, w) and obj.mask.any()


def test_mask_thresholds_match_the_manifests(real_items):
    items, _ = real_items
    by_origin = {i.origin: i for i in items}
    for row in _manifest("wbc-segmentation")[:40]:  # 120 px: not resized, fractions exact
        scene = by_origin[f"wbc-segmentation/{row['image']}"].scene
        objs = {o.name: o.mask.mean() for o in scene.objects}
        assert objs["nucleus"] == pytest.approx(float(row["nucleus_fraction"]), abs=6e-4)
        if "cytoplasm" in objs:
            assert objs["cytoplasm"] == pytest.approx(float(row["cytoplasm_fraction"]), abs=6e-4)
    for row in _manifest("kvasir-seg-mini"):  # JPEG masks thresholded at 128, then resized
        (polyp,) = by_origin[f"kvasir-seg-mini/{row['image']}"].scene.objects
        assert polyp.name == "polyp"
        assert polyp.mask.mean() == pytest.approx(float(row["mask_fg_fraction_thr128"]), abs=0.01)


def test_volumes_are_sliced_with_named_labels(real_items):
    items, _ = real_items
    ct = [i for i in items if i.origin.endswith("example_ct_sm.nii.gz")]
    assert 3 <= len(ct) <= 6
    names = {o.name for i in ct for o in i.scene.objects}
    assert {"liver", "spleen", "right kidney", "left kidney"} <= names
    for item in ct:  # radiological convention: the patient's right on the image left
        liver = {o.name: o for o in item.scene.objects}.get("liver")
        if liver is not None and liver.mask.sum() > 100:
            assert np.nonzero(liver.mask)[1].mean() < liver.mask.shape[1] / 2
    brain = [i for i in items if i.source == "pyradiomics-testcases"]
    assert {o.name for i in brain for o in i.scene.objects} == {"tumor", "lesion"}
    assert all(i.scene.modality == "mr" for i in brain)


def test_read_nrrd_matches_the_header(tmp_path: Path):
    needs_realdata()
    label, fields = read_nrrd(REALDATA / "pyradiomics-testcases" / "brain1_label.nrrd")
    assert label.shape == (256, 256, 25) and label.dtype == np.dtype("<i4")
    assert set(np.unique(label).tolist()) == {0, 1} and fields["encoding"] == "gzip"
    # A hand-made big-endian raw file, fastest axis first.
    values = np.arange(24, dtype=">u2").reshape(4, 3, 2)  # (Z, Y, X) in memory order
    header = "NRRD0004\ntype: ushort\ndimension: 3\nsizes: 2 3 4\nendian: big\nencoding: raw\n\n"
    (tmp_path / "v.nrrd").write_bytes(header.encode() + values.tobytes())
    array, _ = read_nrrd(tmp_path / "v.nrrd")
    assert array.shape == (2, 3, 4) and np.array_equal(array, values.T)
    gz = header.replace("raw", "gzip").replace("big", "little")
    (tmp_path / "g.nrrd").write_bytes(gz.encode() + gzip.compress(values.astype("<u2").tobytes()))
    assert np.array_equal(read_nrrd(tmp_path / "g.nrrd")[0], values.T)
    (tmp_path / "b.nrrd").write_bytes(header.replace("raw", "bzip2").encode())
    with pytest.raises(ValueError, match="encoding 'bzip2' is not supported"):
        read_nrrd(tmp_path / "b.nrrd")


def test_hdf5_patches_are_skipped_with_a_note_only_without_h5py(real_items):
    items, notes = real_items
    msd = [i for i in items if i.source == "msd-task06-lung-patches"]
    noted = any("msd-task06-lung-patches: skipped" in n and "h5py" in n for n in notes)
    has_h5py = realdata.importlib.util.find_spec("h5py") is not None
    assert (bool(msd), noted) == (has_h5py, not has_h5py)


def test_hdf5_patches_are_read_per_patient_when_h5py_is_present(monkeypatch):
    needs_realdata()
    rng = np.random.default_rng(0)
    labels = np.zeros((25, 1, 48, 48))
    tumour = [1, 2, 3, 12, 21]  # patients 0, 0, 0, 1 and 2: ten patches each
    labels[tumour, 0, 10:30, 12:28] = 1
    labels[5, 0, 10:13, 10:13] = 1  # 9 pixels: too small to ask about
    data = {"images": rng.random((25, 1, 48, 48)).astype(np.float32), "labels": labels}

    class FakeFile(dict):
        def __init__(self, path, mode):
            super().__init__(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setitem(sys.modules, "h5py", types.SimpleNamespace(File=FakeFile))
    monkeypatch.setattr(realdata.importlib.util, "find_spec", lambda name: object())
    splits = realdata.read_splits(REALDATA)
    items = list(realdata._iter_msd(REALDATA, splits, [], 256, patches=None))
    train = [(i.case, i.slice, i.group) for i in items if i.split == "train"]
    assert train == [
        ("val-patches-pt00", "p_0001", "msd-task06-lung-patches/val_patches.h5#patient00"),
        ("val-patches-pt00", "p_0002", "msd-task06-lung-patches/val_patches.h5#patient00"),
        ("val-patches-pt00", "p_0003", "msd-task06-lung-patches/val_patches.h5#patient00"),
        ("val-patches-pt01", "p_0012", "msd-task06-lung-patches/val_patches.h5#patient01"),
        ("val-patches-pt02", "p_0021", "msd-task06-lung-patches/val_patches.h5#patient02"),
    ]
    holdout = [i for i in items if i.split == "holdout"]
    assert [i.case for i in holdout] == ["test-patches-pt00"] * 3 + [
        "test-patches-pt01",
        "test-patches-pt02",
    ]
    assert all(i.origin == "msd-task06-lung-patches/test_patches.h5" for i in holdout)
    assert all(
        i.scene.objects[0].name == "tumor" and i.scene.image.shape == (48, 48, 3) for i in items
    )
    # A cap takes evenly spaced patches: the first, middle and last of the five.
    capped = list(realdata._iter_msd(REALDATA, splits, [], 256, patches=3))
    assert [i.slice for i in capped if i.split == "train"] == ["p_0001", "p_0003", "p_0021"]


def test_files_missing_from_splits_csv_are_never_used(tmp_path: Path):
    root = tmp_path / "realdata"
    folder = root / "busi-mini"
    image = np.full((40, 40), 90, np.uint8)
    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 10:30] = 255
    for name in ("a", "b"):
        write_png(folder / f"images/{name}.png", image)
        write_png(folder / f"masks/{name}_mask.png", mask)
    (folder / "manifest.csv").write_text(
        "image,mask,label\nimages/a.png,masks/a_mask.png,malignant tumor\n"
        "images/b.png,masks/b_mask.png,malignant tumor\n"
    )
    (root / "splits.csv").write_text(
        "source,image,mask,split,note\nbusi-mini,images/a.png,masks/a_mask.png,holdout,\n"
    )
    notes: list[str] = []
    items = list(iter_realdata(root, notes))
    assert [(i.origin, i.split) for i in items] == [("busi-mini/images/a.png", "holdout")]
    assert notes == ["busi-mini/images/b.png: skipped, not listed in splits.csv"]


def test_credits_copy_origin_and_licence_paragraphs():
    needs_realdata()
    credits = read_credits(REALDATA)
    assert credits["busi-mini"]["licence"].startswith("**Licence:**")
    assert "CC0" in credits["busi-mini"]["licence"]
    assert "OpenGVLab/SAM-Med2D" in credits["sam-med2d-demo"]["origin"]
    assert all(c["licence"] for c in credits.values())
    # Newer sources put the licence name inside the bold marker.
    assert credits["hc18-fetal-head"]["licence"].startswith("**Licence: CC BY 4.0**")
    # A licence line inside the origin paragraph is found too, from its own line on.
    assert credits["kvasir-seg-extra"]["licence"].startswith("**Licence:** Kvasir-SEG")


NEW_SOURCES = {  # source → (modality, structure names the manifest labels give)
    "dsb2018-nuclei": ("microscopy", {"nuclei"}),  # manifest "nucleus": the mask holds them all
    "hc18-fetal-head": ("ultrasound", {"fetal head"}),
    "bus-bra-breast-ultrasound": ("ultrasound", {"benign tumor", "malignant tumor"}),
    "ph2-dermoscopy": ("dermoscopy", {"skin lesion"}),
    "kvasir-seg-extra": ("endoscopy", {"polyp"}),
}


@pytest.mark.parametrize("source", sorted(NEW_SOURCES))
def test_new_sources_are_read_with_their_manifest_labels_and_splits(real_items, source: str):
    items, notes = real_items
    modality, names = NEW_SOURCES[source]
    mine = {i.origin: i for i in items if i.source == source}
    skipped = {n.split(":")[0] for n in notes if n.startswith(f"{source}/")}
    rows = _manifest(source)
    splits = realdata.read_splits(REALDATA)
    assert len(mine) + len(skipped) >= len(rows) and len(mine) >= 0.95 * len(rows)
    for row in rows:
        item = mine.get(f"{source}/{row['image']}")
        if item is None:
            continue
        assert item.split == splits[(source, row["image"])]
        assert item.scene.modality == modality
        (obj,) = item.scene.objects
        assert obj.name == {"nucleus": "nuclei"}.get(row["label"], row["label"])
        # Shrunk to 256 px: the foreground share stays what the manifest states.
        assert obj.mask.mean() == pytest.approx(float(row["mask_fg_fraction"]), abs=0.02)
        if source == "bus-bra-breast-ultrasound":  # one biopsy-proven lesion: the other is absent
            assert item.scene.absent == tuple(names - {obj.name})
            assert item.scene.site == "breast" and obj.kind == "finding"
    assert {o.name for i in mine.values() for o in i.scene.objects} == names
    wanted = (
        {"zero-shot"} if source in ("ph2-dermoscopy", "kvasir-seg-extra") else {"train", "holdout"}
    )
    assert {i.split for i in mine.values()} == wanted
