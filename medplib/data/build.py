"""Build a MeCoVQA-format demo corpus from synthetic scenes and the shared real images.

Layout (SA-Med2D-style names, so every reader of the real corpus reads this one too)::

    DIR/images/{modality}_00--{source}--{case}--{slice}.png
    DIR/masks/{image stem}--{class id:04d}_000.png        one class-level mask per structure
    DIR/{vqa,region,grounding}/{train,val,holdout,zeroshot}.json
    DIR/classes.json, DIR/data_card.json, DIR/data_card.md

Synthetic images go to train / val / holdout by a seeded shuffle. Real images keep the split
``splits.csv`` gives them: ``train`` items go to train or val (a whole volume, or one patient
of an HDF5 patch file, to one side), ``holdout`` items only to holdout.json, ``zero-shot``
items only to zeroshot.json. Every item draws its randomness from its own seed, so the same
seed gives the same bytes, however many worker processes build it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from medplib.data.card import write_card
from medplib.data.files import write_png
from medplib.data.questions import make_questions
from medplib.data.realdata import iter_realdata, read_credits
from medplib.data.synthetic import CLASS_NAMES, MODALITIES, Scene, generate_scene
from medplib.errors import UserInputError

TASKS = ("vqa", "region", "grounding")
CORPUS_SPLITS = ("train", "val", "holdout", "zeroshot")
_MANAGED = ("images", "masks", *TASKS, "classes.json", "data_card.json", "data_card.md")
_REAL_SPLIT = {"train": "train", "holdout": "holdout", "zero-shot": "zeroshot"}


@dataclass
class BuildConfig:
    out: Path
    seed: int = 0
    # 500 per modality = 400 train + 50 val + 50 holdout: 4,000 synthetic images, about
    # 32,000 records, built in well under a minute on two cores.
    synthetic_per_modality: int = 500
    realdata: Path | None = None  # the shared realdata folder; None builds synthetic only
    image_size: int = 128  # synthetic images are square, this many pixels a side
    real_max_side: int = 256  # real images are shrunk to this longest side
    val_fraction: float = 0.1
    holdout_fraction: float = 0.1  # synthetic only: real holdout comes from splits.csv
    real_per_source: int | None = None  # cap per (source, split), for quick test corpora
    n_vqa: int = 3  # complex-VQA records per image
    n_region: int = 2  # region-VQA records per image
    max_grounding: int = 4  # grounding records per image (one per named structure, at most)
    # Real images are few and hold many labelled structures: use more of each.
    real_n_region: int = 4
    real_max_grounding: int = 12
    # Real grounding records ask the official MeCoVQA-G question; train items ask each structure
    # this many ways in all (official + others), val / holdout / zero-shot only the official one,
    # so the numbers measured on them are those of the official phrasing.
    real_train_phrasings: int = 2
    workers: int = 1
    overwrite: bool = False

    @classmethod
    def small(cls, out: Path, **changes) -> BuildConfig:
        """A corpus for tests: seconds to build, every modality, task and split present."""
        base = {"synthetic_per_modality": 10, "real_per_source": 2, "image_size": 64}
        return cls(out=out, **{**base, **changes})


@dataclass
class BuildResult:
    out: Path
    seconds: float
    images: int
    masks: int
    records: dict[str, dict[str, int]]  # task → split → records
    notes: list[str] = field(default_factory=list)


class ClassTable:
    """Structure name → 4-digit class id: synthetic classes first, real ones as first met."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {name: i + 1 for i, name in enumerate(CLASS_NAMES)}

    def id(self, name: str) -> int:
        if name not in self.ids:
            self.ids[name] = len(self.ids) + 1
        return self.ids[name]


def _unit(*parts: object) -> float:
    """A stable number in [0, 1) from its arguments."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


def _write_item(
    out: Path,
    stem: str,
    scene: Scene,
    class_id: dict[str, int],
    rng: np.random.Generator,
    meta: dict,
    config: BuildConfig,
    exhaustive: bool,
) -> list[dict]:
    """Write one image and its masks; return its records."""
    image_rel = f"images/{stem}.png"
    write_png(out / image_rel, scene.image)
    mask_paths = {}
    for obj in scene.objects:
        rel = f"masks/{stem}--{class_id[obj.name]:04d}_000.png"
        write_png(out / rel, obj.mask)
        mask_paths[obj.name] = rel
    real = meta["source"] != "synthetic"
    qas = make_questions(
        scene,
        mask_paths,
        rng,
        n_vqa=config.n_vqa,
        n_region=config.real_n_region if real else config.n_region,
        max_grounding=config.real_max_grounding if real else config.max_grounding,
        exhaustive=exhaustive,
        official_grounding=real,
        grounding_phrasings=config.real_train_phrasings if meta["split"] == "train" else 1,
    )
    records = []
    for k, qa in enumerate(qas):
        records.append(
            {
                "id": f"{stem}#{qa.task[0]}{k}",
                "image": image_rel,
                "conversations": [
                    {"from": "human", "value": qa.question},
                    {"from": "gpt", "value": qa.answer},
                ],
                "answer_type": qa.answer_type,
                "question_kind": qa.kind,
                "modality": scene.modality,
                "source": meta["source"],
                "task": qa.task,
                "split": meta["split"],
                "origin": meta["origin"],
                **({"origin_sha256": meta["sha256"]} if "sha256" in meta else {}),
            }
        )
    return records


def _synthetic_job(args: tuple[BuildConfig, str, int, str]) -> list[dict]:
    config, modality, index, split = args
    m = MODALITIES.index(modality)
    scene_rng = np.random.default_rng([config.seed, m, index, 0])
    question_rng = np.random.default_rng([config.seed, m, index, 1])
    scene = generate_scene(modality, scene_rng, config.image_size)
    stem = f"{modality}_00--synthetic--{modality}{index:05d}--2d_none"
    class_id = {name: i + 1 for i, name in enumerate(CLASS_NAMES)}
    meta = {"source": "synthetic", "split": split, "origin": f"synthetic/{modality}/{index}"}
    return _write_item(config.out, stem, scene, class_id, question_rng, meta, config, True)


def synthetic_splits(config: BuildConfig) -> list[tuple[str, int, str]]:
    """(modality, index, split) for every synthetic image, split by a seeded shuffle."""
    jobs: list[tuple[str, int, str]] = []
    n = config.synthetic_per_modality
    n_hold, n_val = round(n * config.holdout_fraction), round(n * config.val_fraction)
    for m, modality in enumerate(MODALITIES):
        order = np.random.default_rng([config.seed, m, 2**31 - 1]).permutation(n)
        split_of = {}
        for rank, index in enumerate(order):
            split_of[int(index)] = (
                "holdout" if rank < n_hold else ("val" if rank < n_hold + n_val else "train")
            )
        jobs.extend((modality, i, split_of[i]) for i in range(n))
    return jobs


def _prepare_out(config: BuildConfig) -> None:
    out = config.out
    if out.exists() and not out.is_dir():
        raise UserInputError(f"{out} exists and is not a folder; choose another --out.")
    if out.is_dir() and any(out.iterdir()):
        if not (out / "data_card.json").is_file():
            raise UserInputError(
                f"{out} is not empty and holds no corpus; choose an empty or new folder for --out."
            )
        if not config.overwrite:
            raise UserInputError(
                f"{out} already holds a corpus; pass --overwrite to rebuild it in place."
            )
        for name in _MANAGED:  # only what a build writes: anything else the user put there stays
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    for name in ("images", "masks"):
        (out / name).mkdir(parents=True, exist_ok=True)


def _real_records(config: BuildConfig, classes: ClassTable, notes: list[str]) -> Iterable[dict]:
    assert config.realdata is not None
    taken: dict[tuple[str, str], int] = {}
    for item in iter_realdata(config.realdata, notes, max_side=config.real_max_side):
        key = (item.source, item.split)
        if config.real_per_source is not None and taken.get(key, 0) >= config.real_per_source:
            continue
        taken[key] = taken.get(key, 0) + 1
        split = _REAL_SPLIT[item.split]
        unit = item.group or item.origin
        if split == "train" and _unit(config.seed, "val", unit) < config.val_fraction:
            split = "val"  # per source file (or patient): slices of one volume stay together
        stem = f"{item.scene.modality}_00--{item.source}--{item.case}--{item.slice}"
        class_id = {o.name: classes.id(o.name) for o in item.scene.objects}
        rng = np.random.default_rng([config.seed, int(_unit(item.source, item.case) * 2**62)])
        meta = {
            "source": item.source,
            "split": split,
            "origin": item.origin,
            "sha256": item.origin_sha256,
        }
        yield from _write_item(config.out, stem, item.scene, class_id, rng, meta, config, False)


def build_corpus(config: BuildConfig) -> BuildResult:
    """Write the corpus described by `config`; returns counts and what was skipped."""
    if config.synthetic_per_modality < 0:
        raise UserInputError("--synthetic-per-modality must be 0 or more.")
    if config.image_size < 32:
        raise UserInputError("--image-size must be at least 32 pixels.")
    if config.real_train_phrasings < 1:
        raise UserInputError("real_train_phrasings must be at least 1.")
    if config.seed < 0 or config.workers < 1:
        raise UserInputError("--seed must be 0 or more and --workers at least 1.")
    if config.realdata is not None and not (config.realdata / "splits.csv").is_file():
        raise UserInputError(
            f"{config.realdata} has no splits.csv; pass the shared realdata folder or --no-realdata."
        )
    start = time.perf_counter()
    _prepare_out(config)
    notes: list[str] = []
    jobs = [(config, *job) for job in synthetic_splits(config)]
    records: list[dict] = []
    if config.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(config.workers) as pool:
            for chunk in pool.map(_synthetic_job, jobs, chunksize=16):
                records.extend(chunk)
    else:
        for job in jobs:
            records.extend(_synthetic_job(job))
    classes = ClassTable()
    credits: dict[str, dict[str, str]] = {}
    if config.realdata is not None:
        records.extend(_real_records(config, classes, notes))
        credits = read_credits(config.realdata)
    counts = _write_splits(config.out, records)
    (config.out / "classes.json").write_text(
        json.dumps({f"{i:04d}": n for n, i in classes.ids.items()}, indent=1) + "\n",
        encoding="utf-8",
    )
    settings = {k: v for k, v in asdict(config).items() if k not in ("out", "workers", "overwrite")}
    settings["realdata"] = "used" if config.realdata is not None else "not used"
    write_card(config.out, records, settings, credits, notes)
    return BuildResult(
        out=config.out,
        seconds=time.perf_counter() - start,
        images=sum(1 for _ in (config.out / "images").iterdir()),
        masks=sum(1 for _ in (config.out / "masks").iterdir()),
        records=counts,
        notes=notes,
    )


def _write_splits(out: Path, records: list[dict]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for task in TASKS:
        (out / task).mkdir(exist_ok=True)
        counts[task] = {}
        for split in CORPUS_SPLITS:
            chosen = [r for r in records if r["task"] == task and r["split"] == split]
            text = json.dumps(chosen, indent=1, ensure_ascii=False)
            (out / task / f"{split}.json").write_text(text + "\n", encoding="utf-8")
            counts[task][split] = len(chosen)
    return counts
