"""Corpus builder: reproducible bytes, readable by the checker, and no evaluation item in training."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from data_helpers import REALDATA, needs_realdata
from PIL import Image

from medplib.cli import main
from medplib.data import MeCoVQADataset, read_mecovqa
from medplib.data.build import CORPUS_SPLITS, TASKS, BuildConfig, BuildResult, build_corpus
from medplib.data.near_duplicates import NEAR_DUPLICATE_BITS, average_hash, near_pairs
from medplib.data.synthetic import MODALITIES


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _records(root: Path) -> list[dict]:
    out = []
    for task in TASKS:
        for split in CORPUS_SPLITS:
            for r in json.loads((root / task / f"{split}.json").read_text()):
                out.append({**r, "_file": (task, split)})
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("c") / "small"
    build_corpus(BuildConfig.small(out, seed=3))
    return out


def test_same_seed_gives_byte_identical_corpus(small: Path, tmp_path: Path):
    again = tmp_path / "again"
    build_corpus(BuildConfig.small(again, seed=3, workers=2))  # worker count changes nothing
    assert _tree(again) == _tree(small)
    other = tmp_path / "other"
    build_corpus(BuildConfig.small(other, seed=4))
    assert _tree(other) != _tree(small)
    images = lambda tree: {k for k in tree if k.startswith("images/")}  # noqa: E731
    assert images(_tree(other)) == images(_tree(small))  # same names, other pixels


KINDS = {
    "vqa": {"modality", "presence", "side", "height", "size", "describe"},
    "region": {"name-region", "describe-region", "verify-region"},
    "grounding": {"segment"},
}


def test_every_file_passes_the_checker_and_records_are_complete(small: Path):
    seen_ids = set()
    for task in TASKS:
        for split in CORPUS_SPLITS:
            path = small / task / f"{split}.json"
            report = read_mecovqa(path, small)
            assert report.problems == [] and report.notes == []
            assert {s.task for s in report.samples} <= {task}
            records = json.loads(path.read_text())
            # The template family travels to the parsed sample, for per-kind reports.
            assert [s.question_kind for s in report.samples] == [
                r["question_kind"] for r in records
            ]
            kinds = {r["question_kind"] for r in records}
            assert kinds <= KINDS[task], kinds - KINDS[task]
            for r in records:
                assert {
                    "id",
                    "image",
                    "conversations",
                    "answer_type",
                    "modality",
                    "source",
                } <= r.keys()
                assert (r["task"], r["split"]) == (task, split)
                assert r["id"] not in seen_ids
                seen_ids.add(r["id"])
    assert len(seen_ids) > 300


def test_synthetic_splits_cover_every_modality_and_never_share_an_image(small: Path):
    records = _records(small)
    image_split = {}
    for r in records:
        assert image_split.setdefault(r["image"], r["split"]) == r["split"]
    assert not [r for r in records if r["split"] == "zeroshot"]
    for modality in MODALITIES:
        splits = {r["split"] for r in records if r["modality"] == modality}
        assert splits == {"train", "val", "holdout"}
    counts = json.loads((small / "data_card.json").read_text())["records"]["by_task"]
    for task in TASKS:
        for split in CORPUS_SPLITS:
            n = len([r for r in records if r["_file"] == (task, split)])
            assert counts[task].get(split, 0) == n


def test_dataset_reads_a_built_split(small: Path):
    ds = MeCoVQADataset(small / "grounding" / "train.json", small)
    item = ds[0]
    assert item.image.shape == (64, 64, 3)
    (target,) = item.target_masks
    assert target.shape == (64, 64) and target.any()
    name = item.turns[0].question
    assert any(w in item.turns[0].answer.split("<SEG>")[0] for w in name.split()[-4:])


def _evaluation_items() -> tuple[set[str], set[str], dict[str, np.ndarray]]:
    """Realdata files (source/path), their sha256 and, for 2-D images, their average hash,
    whose split is holdout or zero-shot."""
    paths, hashes, looks = set(), set(), {}
    with (REALDATA / "splits.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["split"] in ("holdout", "zero-shot"):
                rel = f"{row['source']}/{row['image'].split(':')[0]}"
                paths.add(rel)
                hashes.add(hashlib.sha256((REALDATA / rel).read_bytes()).hexdigest())
                if rel not in looks and Path(rel).suffix.lower() in (".png", ".jpg", ".jpeg"):
                    looks[rel] = average_hash(np.asarray(Image.open(REALDATA / rel).convert("RGB")))
    return paths, hashes, looks


@pytest.fixture(scope="module")
def real_corpus(tmp_path_factory) -> tuple[Path, BuildResult]:
    """Every real item of the shared folder, no synthetic ones (about a minute to build)."""
    needs_realdata()
    out = tmp_path_factory.mktemp("real") / "corpus"
    return out, build_corpus(BuildConfig(out, synthetic_per_modality=0, realdata=REALDATA))


def test_no_holdout_or_zero_shot_item_reaches_train_or_val(real_corpus):
    out, result = real_corpus
    records = _records(out)
    eval_paths, eval_hashes, eval_looks = _evaluation_items()
    training = [r for r in records if r["split"] in ("train", "val")]
    evaluation = [r for r in records if r["split"] in ("holdout", "zeroshot")]
    assert len(training) > 10_000 and len(evaluation) > 5000
    for r in training:
        assert r["origin"] not in eval_paths
        assert r["origin_sha256"] not in eval_hashes
    for r in evaluation:  # and the other way round: every evaluation item is one
        assert r["origin"] in eval_paths and r["origin_sha256"] in eval_hashes
    # No corpus image of a training record is byte-identical to an evaluation image.
    train_bytes = {hashlib.sha256((out / r["image"]).read_bytes()).digest() for r in training}
    eval_bytes = {hashlib.sha256((out / r["image"]).read_bytes()).digest() for r in evaluation}
    assert not train_bytes & eval_bytes
    # Nor a near-duplicate: no training image within the realdata README's average-hash
    # distance of any evaluation image, as written to the corpus or as the original file.
    train_images = sorted({r["image"] for r in training})
    eval_images = sorted({r["image"] for r in evaluation})
    look = lambda rel: average_hash(np.asarray(Image.open(out / rel)))  # noqa: E731
    train_looks = np.stack([look(rel) for rel in train_images])
    eval_looks_all = np.stack([look(rel) for rel in eval_images] + list(eval_looks.values()))
    assert len(eval_looks) > 1000  # the originals of every 2-D evaluation image were hashed
    close = near_pairs(train_looks, eval_looks_all, NEAR_DUPLICATE_BITS)
    named = list(eval_images) + list(eval_looks)
    assert not close, [(train_images[i], named[j], d) for i, j, d in close[:5]]
    zeroshot_sources = {r["source"] for r in records if r["split"] == "zeroshot"}
    assert zeroshot_sources == {
        "biomedparse-demo", "kvasir-seg-mini", "pannuke-mini", "pyradiomics-testcases",
        "wbc-segmentation", "ph2-dermoscopy", "kvasir-seg-extra",
    }  # fmt: skip
    holdout_sources = {r["source"] for r in records if r["split"] == "holdout"}
    assert {
        "dsb2018-nuclei", "hc18-fetal-head", "bus-bra-breast-ultrasound", "msd-task06-lung-patches"
    } <= holdout_sources  # fmt: skip
    assert result.records["grounding"]["holdout"] > 500


def test_real_grounding_is_asked_in_the_official_phrasing(real_corpus):
    out, _ = real_corpus
    official = "<image>\nPlease generate a mask that segments the {} in this image."
    asked: dict[str, Counter] = {}
    for r in _records(out):
        if r["task"] == "grounding":
            question = r["conversations"][0]["value"]
            answer = r["conversations"][1]["value"]
            name = answer.split("<SEG>")[0]  # the answer names the target before <SEG>
            target = next(n for n in _names(out) if f" {n} " in f" {name} " or f"{n}:" in name)
            asked.setdefault(r["split"], Counter())[question == official.format(target)] += 1
    # Evaluation and val: only the official question, so their numbers are that phrasing's.
    for split in ("val", "holdout", "zeroshot"):
        assert set(asked[split]) == {True}, split
    # Training: each structure twice, once officially and once in another phrasing.
    assert asked["train"][True] == asked["train"][False] > 1000


def _names(out: Path) -> list[str]:
    names = json.loads((out / "classes.json").read_text()).values()
    return sorted(names, key=len, reverse=True)  # longest first: "malignant tumor" before "tumor"


def test_card_lists_each_source_with_licence_and_counts_per_split(real_corpus):
    out, _ = real_corpus
    records = _records(out)
    card = json.loads((out / "data_card.json").read_text())
    assert set(card["credits"]) == {r["source"] for r in records}
    assert "CC0" in card["credits"]["busi-mini"]["licence"]
    sources = card["sources"]
    assert sources["hc18-fetal-head"]["licence"] == "CC BY 4.0"
    assert sources["ph2-dermoscopy"]["licence"] == "research use only"
    assert sources["msd-task06-lung-patches"]["licence"] == "CC BY-SA 4.0"
    for source, row in sources.items():
        images = {s: len({r["image"] for r in records if r["source"] == source and r["split"] == s})
                  for s in CORPUS_SPLITS}  # fmt: skip
        assert row["images"] == {s: n for s, n in images.items() if n}, source
    bus = sources["bus-bra-breast-ultrasound"]["images"]
    assert bus["holdout"] == 222 and bus["train"] + bus["val"] == 842 and "zeroshot" not in bus
    md = (out / "data_card.md").read_text()
    assert "## Sources, licences and credits" in md
    assert "| dsb2018-nuclei | CC0 1.0 (BBBC038) | " in md
    for task in TASKS:
        for split in CORPUS_SPLITS:
            assert read_mecovqa(out / task / f"{split}.json", out).problems == []


def test_volume_slices_stay_on_one_side_of_train_and_val(tmp_path: Path):
    needs_realdata()
    out = tmp_path / "real"
    # A cap per source and split keeps it quick; every volume has fewer slices than the cap.
    config = BuildConfig(
        out, synthetic_per_modality=0, realdata=REALDATA, val_fraction=0.5, real_per_source=30
    )
    build_corpus(config)
    sides: dict[str, set[str]] = {}
    for r in _records(out):
        if r["split"] in ("train", "val"):
            sides.setdefault(_case(r), set()).add(r["split"])
    assert all(len(s) == 1 for s in sides.values())
    assert {next(iter(s)) for s in sides.values()} == {"train", "val"}


def _case(record: dict) -> str:
    """The source file and case of a record: a volume, or one patient of an HDF5 patch file."""
    return record["origin"] + "#" + Path(record["image"]).stem.split("--")[2]


def test_patients_of_one_patch_file_are_split_between_train_and_val(real_corpus):
    out, _ = real_corpus
    msd = [
        r for r in _records(out)
        if r["origin"] == "msd-task06-lung-patches/val_patches.h5" and r["task"] == "grounding"
    ]  # fmt: skip
    sides: dict[str, set[str]] = {}
    for r in msd:
        sides.setdefault(_case(r), set()).add(r["split"])
    # Thirteen patients, each wholly on one side, and both sides get some: the file is
    # not carved as one unit, and no patient's neighbouring slices straddle the carve.
    assert len(sides) == 13 and all(len(s) == 1 for s in sides.values())
    assert {next(iter(s)) for s in sides.values()} == {"train", "val"}


def test_cli_build_small_and_refusals(tmp_path: Path, capsys, monkeypatch):
    out = tmp_path / "corpus"
    args = ["data", "build", "--out", str(out), "--small", "--no-realdata"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "grounding: train" in printed and "images" in printed
    before = _tree(out)
    assert main(args) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    (out / "my-notes.txt").write_text("keep me")
    assert main([*args, "--overwrite"]) == 0
    after = _tree(out)
    assert after.pop("my-notes.txt") and after == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("x")
    assert main(["data", "build", "--out", str(foreign), "--small"]) == 2
    assert (
        main([*args[:3], str(tmp_path / "r"), "--small", "--realdata", str(tmp_path / "no")]) == 2
    )


def test_cli_build_without_realdata_folder_says_so_and_builds_synthetic(
    tmp_path: Path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # ../shared/realdata does not exist from here
    assert main(["data", "build", "--out", "c", "--small"]) == 0
    assert "not found; building a synthetic-only corpus" in capsys.readouterr().err
    sources = {r["source"] for r in _records(tmp_path / "c")}
    assert sources == {"synthetic"}


def test_image_size_flag_sets_synthetic_size(tmp_path: Path):
    build_corpus(BuildConfig(tmp_path / "s", synthetic_per_modality=1, image_size=96))
    from PIL import Image

    sizes = {Image.open(p).size for p in (tmp_path / "s" / "images").iterdir()}
    assert sizes == {(96, 96)}
    assert np.asarray(Image.open(next((tmp_path / "s" / "masks").iterdir()))).dtype == np.uint8
