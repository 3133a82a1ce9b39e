"""Training data: a MeCoVQA corpus folder → a deterministic, resumable stream of batches.

The order of records is a pure function of (seed, epoch), so micro-batch `k` is always the
same samples: resuming at micro-batch `k` needs nothing but `k`. With several processes each
takes its slice of the global micro-batch (`rank`, `world_size`).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medplib.conversation import SYSTEM_PROMPT, render_prompt
from medplib.data.mecovqa import LoadedSample, MeCoVQADataset
from medplib.errors import UserInputError
from medplib.modeling.batching import Batch, Sample, collate
from medplib.modeling.configuration import MedPLIBConfig
from medplib.modeling.sam_med2d import SamMed2DConfig
from medplib.modeling.sam_med2d.transforms import (
    centred_pad_offsets,
    preprocess_image,
    resize_longest_side_hw,
)
from medplib.train.attention_labels import attention_target, named_columns
from medplib.train.augment import augment_record
from medplib.train.config import AugmentSection
from medplib.train.patch_labels import PatchLabelIndex

_TAGS = re.compile(r"<image>|<im_start>|<im_end>|<SEG>|<region>|</region>|</s>")


def corpus_files(data_dir: Path, tasks: Iterable[str], split: str) -> list[Path]:
    return [data_dir / task / f"{split}.json" for task in tasks]


def check_corpus(data_dir: Path, tasks: Sequence[str], split: str, stage: str) -> None:
    """Raise UserInputError unless `data_dir` holds images/ and `{task}/{split}.json` per task."""
    if not data_dir.is_dir():
        raise UserInputError(
            f"--data {data_dir} is not a folder; build one with `medplib data build --out DIR`."
        )
    missing = [str(p.relative_to(data_dir)) for p in corpus_files(data_dir, tasks, split)]
    missing = [m for m in missing if not (data_dir / m).is_file()]
    if not (data_dir / "images").is_dir():
        missing.insert(0, "images/")
    if missing:
        raise UserInputError(
            f"--data {data_dir} lacks {', '.join(missing)}, which the {stage} stage needs; "
            "point it at a folder made by `medplib data build`."
        )


def load_task_datasets(
    data_dir: Path, tasks: Sequence[str], split: str, max_records: int | None = None
) -> dict[str, MeCoVQADataset]:
    """One lazy dataset per task; records beyond `max_records` are dropped (quick runs)."""
    out = {}
    for task in tasks:
        ds = MeCoVQADataset(data_dir / task / f"{split}.json", data_dir)
        if max_records is not None:
            ds.samples = ds.samples[:max_records]
        out[task] = ds
    return out


def kind_multipliers(
    datasets: dict[str, MeCoVQADataset], kind_weights: dict[str, float]
) -> dict[str, np.ndarray] | None:
    """Per-record factors from `data.question_kinds` (kind → weight, "*" = every other kind).

    Records without a question kind (hand-written or converted corpora) count as "*". A kind
    that no record has is an error, so that a misspelt name does not silently weigh nothing.
    None when `kind_weights` is empty.
    """
    return _field_multipliers(datasets, kind_weights, "question_kind", "data.question_kinds")


def source_multipliers(
    datasets: dict[str, MeCoVQADataset], source_weights: dict[str, float]
) -> dict[str, np.ndarray] | None:
    """Per-record factors from `data.sources` (source → weight, "*" = every other source).

    As `kind_multipliers`, over each record's source ("synthetic", "busi-mini", …): lets a
    run see a source with few records more often. Unlike a question kind, a source the corpus
    lacks is not an error: one recipe serves corpora built with and without the real data.
    """
    present = {s.source for ds in datasets.values() for s in ds.samples}
    known = {k: w for k, w in source_weights.items() if k == "*" or k in present}
    return _field_multipliers(datasets, known, "source", "data.sources")


def combined_multipliers(
    *factors: dict[str, np.ndarray] | None,
) -> dict[str, np.ndarray] | None:
    """The per-record product of several factor sets (None where none is given)."""
    given = [f for f in factors if f is not None]
    if not given:
        return None
    out = {task: values.copy() for task, values in given[0].items()}
    for more in given[1:]:
        for task, values in more.items():
            out[task] = out[task] * values
    return out


def _field_multipliers(
    datasets: dict[str, MeCoVQADataset], weights: dict[str, float], attr: str, setting: str
) -> dict[str, np.ndarray] | None:
    if not weights:
        return None
    default = weights.get("*", 1.0)
    present = {getattr(s, attr) for ds in datasets.values() for s in ds.samples}
    missing = sorted(k for k in weights if k != "*" and k not in present)
    if missing:
        have = sorted(k for k in present if k is not None)
        raise UserInputError(
            f"{setting} names {missing[0]!r}, which no training record of tasks "
            f"{sorted(datasets)} has; theirs are {have}."
        )
    return {
        task: np.array(
            [weights.get(getattr(s, attr) or "*", default) for s in ds.samples],
            dtype=np.float64,
        )
        for task, ds in datasets.items()
    }


def corpus_texts(datasets: Iterable[MeCoVQADataset]) -> Iterator[str]:
    """Rendered conversations without placeholder tags, for training the tokenizer."""
    yield SYSTEM_PROMPT
    for ds in datasets:
        for s in ds.samples:
            text = render_prompt([(t.question, t.answer) for t in s.turns], use_im_start_end=False)
            yield _TAGS.sub(" ", text)


def to_model_sample(loaded: LoadedSample) -> Sample:
    return Sample(
        image=loaded.image,
        turns=loaded.qa_pairs,
        regions=loaded.regions,
        target_masks=[m.astype(np.float32) for m in loaded.target_masks],
    )


class RecordOrder:
    """Task-weighted, per-epoch shuffled (task, index) order over several datasets.

    A weight w repeats every record floor(w) times and adds a random fraction w - floor(w)
    of them, so `tasks: {vqa: 0.5}` sees a different half of the VQA records each epoch.
    `multipliers` (task → one factor per record, e.g. from `kind_multipliers`) scales the
    task weight record by record; records sharing a factor are weighted as one group, and
    a factor 0 leaves the record out.
    """

    def __init__(
        self,
        sizes: dict[str, int],
        weights: dict[str, float],
        seed: int,
        multipliers: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.tasks = list(sizes)
        self.seed = seed
        # task → [(record indices, weight)]; one group of all records without multipliers.
        self.groups: dict[str, list[tuple[np.ndarray, float]]] = {}
        for task in self.tasks:
            factors = (multipliers or {}).get(task)
            if factors is None:
                self.groups[task] = [(np.arange(sizes[task]), weights[task])]
                continue
            factors = np.asarray(factors, dtype=np.float64)
            if factors.shape != (sizes[task],):
                raise ValueError(f"{task}: {factors.shape} multipliers for {sizes[task]} records")
            self.groups[task] = [
                (np.flatnonzero(factors == f), weights[task] * float(f))
                for f in np.unique(factors)
                if f > 0
            ]
        self.epoch_length = sum(
            self._count(len(idx), w) for groups in self.groups.values() for idx, w in groups
        )
        if self.epoch_length == 0:
            raise UserInputError(
                "the training data is empty after weighting; raise data.tasks "
                "(or data.question_kinds)."
            )
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    @staticmethod
    def _count(n: int, weight: float) -> int:
        return int(round(weight * n))

    def epoch(self, epoch: int) -> np.ndarray:
        """(epoch_length, 2) int64 rows of (task number, record index)."""
        if epoch not in self._cache:
            rng = np.random.default_rng([self.seed, epoch])
            parts = []
            for t, task in enumerate(self.tasks):
                for members, w in self.groups[task]:
                    n, whole = len(members), int(w)
                    idx = np.tile(members, whole)
                    extra = self._count(n, w) - whole * n
                    if extra > 0:
                        idx = np.concatenate([idx, members[rng.permutation(n)[:extra]]])
                    parts.append(np.stack([np.full(len(idx), t), idx], axis=1))
            rows = np.concatenate(parts)
            self._cache[epoch] = rows[rng.permutation(len(rows))]
            while len(self._cache) > 2:
                self._cache.popitem(last=False)
        return self._cache[epoch]

    def take(self, start: int, count: int) -> list[tuple[str, int]]:
        """`count` entries from global position `start` of the endless epoch sequence."""
        out = []
        for pos in range(start, start + count):
            e, i = divmod(pos, self.epoch_length)
            t, k = self.epoch(e)[i]
            out.append((self.tasks[int(t)], int(k)))
        return out


@dataclass
class SamBatch:
    """Prompted-segmentation batch for align: SAM input, one box or point prompt, the target."""

    sam_pixels: torch.Tensor  # (B, 3, S, S) float32
    boxes_xyxy_px: torch.Tensor  # (B, 4) in the padded S × S frame; rows of a point prompt unused
    points_xy_px: torch.Tensor  # (B, 1, 2) in the padded frame
    use_box: torch.Tensor  # (B,) bool: box prompt, else a single positive point
    input_hw: list[tuple[int, int]]  # resized size before padding
    target_masks: list[torch.Tensor] = field(default_factory=list)  # each (H, W) float

    def to(self, device: torch.device | str) -> SamBatch:
        return SamBatch(
            self.sam_pixels.to(device),
            self.boxes_xyxy_px.to(device),
            self.points_xy_px.to(device),
            self.use_box.to(device),
            list(self.input_hw),
            [m.to(device) for m in self.target_masks],
        )


def prompt_from_mask(mask: np.ndarray, sam_size: int) -> tuple[list[float], list[float], tuple]:
    """Box (xyxy) and an inside point (x, y), in pixels of the padded SAM frame, from a mask.

    The point is the mask pixel closest to the mask's centroid, so it lies on the structure
    even for crescents. Returns (box, point, resized_hw).
    """
    h, w = mask.shape
    rh, rw = resize_longest_side_hw((h, w), sam_size)
    top, left = centred_pad_offsets((rh, rw), sam_size)
    sy, sx = rh / h, rw / w
    ys, xs = np.nonzero(mask)
    box = [
        left + xs.min() * sx,
        top + ys.min() * sy,
        left + (xs.max() + 1) * sx,
        top + (ys.max() + 1) * sy,
    ]
    k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
    point = [left + (xs[k] + 0.5) * sx, top + (ys[k] + 0.5) * sy]
    return [float(v) for v in box], [float(v) for v in point], (rh, rw)


def collate_sam(
    items: Sequence[tuple[np.ndarray, np.ndarray, bool]], sam: SamMed2DConfig
) -> SamBatch:
    """(image RGB uint8, target mask, use_box) triples → SamBatch."""
    size = sam.image_encoder.img_size
    pixels, boxes, points, hws, targets = [], [], [], [], []
    for image, mask, _ in items:
        pixels.append(
            preprocess_image(
                image, target_px=size, pixel_mean=sam.pixel_mean, pixel_std=sam.pixel_std
            )
        )
        box, point, hw = prompt_from_mask(mask, size)
        boxes.append(box)
        points.append([point])
        hws.append(hw)
        targets.append(torch.from_numpy(mask.astype(np.float32)))
    return SamBatch(
        sam_pixels=torch.stack(pixels),
        boxes_xyxy_px=torch.tensor(boxes, dtype=torch.float32),
        points_xy_px=torch.tensor(points, dtype=torch.float32),
        use_box=torch.tensor([b for _, _, b in items], dtype=torch.bool),
        input_hw=hws,
        target_masks=targets,
    )


@dataclass
class StreamSpec:
    """One batch source: datasets, their order and the per-process batch size."""

    datasets: dict[str, MeCoVQADataset]
    order: RecordOrder
    batch_size: int


class BatchStream(torch.utils.data.Dataset):
    """Map-style dataset whose item `k` is global micro-batch `k` for this process.

    Items are dicts: ``{"lm": Batch}``; for the align stage also ``"sam": SamBatch``, and
    with a `patch_labels` index ``"patch_labels"``: (B, N, K) coverage targets of the CLIP
    patches, one row per sample of ``"lm"``; with an `attention_labels` index
    ``"attention_labels"``: (B, N) where the first question's named structures lie
    (`medplib.train.attention_labels`; zero rows for questions naming none). With `augment`
    (an `AugmentSection`) the language-model records are changed by `augment_record`, each
    with a generator seeded by (augment_seed, k, rank, position in the batch).
    """

    def __init__(
        self,
        lm: StreamSpec,
        tokenizer,
        model_config: MedPLIBConfig,
        *,
        num_micro_batches: int,
        sam: StreamSpec | None = None,
        max_length: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        patch_labels: PatchLabelIndex | None = None,
        attention_labels: PatchLabelIndex | None = None,
        augment: AugmentSection | None = None,
        augment_seed: int = 0,
    ) -> None:
        self.lm, self.sam = lm, sam
        self.augment, self.augment_seed = augment, augment_seed
        self.patch_labels = patch_labels
        self.attention_labels = attention_labels
        self.tokenizer, self.model_config = tokenizer, model_config
        self.num_micro_batches = num_micro_batches
        self.max_length = max_length
        self.rank, self.world_size = rank, world_size
        self.skipped = 0  # samples left out because they exceed the sequence limit

    def __len__(self) -> int:
        return self.num_micro_batches

    def _entries(self, spec: StreamSpec, k: int) -> list[tuple[str, int]]:
        start = (k * self.world_size + self.rank) * spec.batch_size
        return spec.order.take(start, spec.batch_size)

    def lm_loaded(self, k: int) -> list[LoadedSample]:
        records = [self.lm.datasets[t][i] for t, i in self._entries(self.lm, k)]
        if self.augment is None or not self.augment.probability:
            return records
        return [
            augment_record(
                r, self.augment, np.random.default_rng((self.augment_seed, k, self.rank, j))
            )
            for j, r in enumerate(records)
        ]

    def __getitem__(self, k: int) -> dict:
        if not 0 <= k < self.num_micro_batches:
            raise IndexError(k)
        records = self.lm_loaded(k)
        batch, kept = self._collate([to_model_sample(s) for s in records])
        out: dict = {"lm": batch}
        if self.patch_labels is not None:
            out["patch_labels"] = self._patch_targets(self.patch_labels, [records[j] for j in kept])
        if self.attention_labels is not None:
            out["attention_labels"] = self._attention_targets([records[j] for j in kept])
        if self.sam is not None:
            items = []
            for n, (t, i) in enumerate(self._entries(self.sam, k)):
                loaded = self.sam.datasets[t][i]
                masks = loaded.target_masks
                # Box and point prompts alternate so the encoder learns extents, not just boxes.
                items.append((loaded.image, masks[0], (k + n) % 2 == 0))
            out["sam"] = collate_sam(items, SamMed2DConfig.from_dict(self.model_config.sam))
        return out

    def _attention_targets(self, loaded: list[LoadedSample]) -> torch.Tensor:
        """(B, N) attention targets: the first question's named structures over the patches."""
        index = self.attention_labels
        assert index is not None
        k = index.num_classes
        coverage = self._patch_targets(index, loaded)[:, :, :k].numpy()  # (B, N, K)
        rows = []
        for s, cov in zip(loaded, coverage, strict=True):
            question = s.qa_pairs[0][0] if s.turns else ""
            columns = named_columns(question, index.class_names, cov.sum(axis=0) > 0)
            rows.append(attention_target(cov, columns))
        return torch.from_numpy(np.stack(rows))

    def _patch_targets(self, index: PatchLabelIndex, loaded: list[LoadedSample]) -> torch.Tensor:
        """(B, N, K) patch-coverage targets of the samples' images."""
        vision = self.model_config.vision
        rows = []
        for s in loaded:
            h, w = s.image.shape[:2]  # (H, W, 3) uint8, as loaded
            rows.append(
                index.targets(
                    s.sample.image_path,
                    height_px=h,
                    width_px=w,
                    image_size_px=vision.image_size,
                    patch_size_px=vision.patch_size,
                )
            )
        return torch.from_numpy(np.stack(rows))

    def _collate(self, samples: list[Sample]) -> tuple[Batch, list[int]]:
        """The batch and the positions of the samples it holds (too-long ones are left out)."""
        try:
            batch = collate(samples, self.tokenizer, self.model_config, self.max_length)
            return batch, list(range(len(samples)))
        except ValueError:
            pass
        kept = []
        for j, s in enumerate(samples):  # rare path: find the samples that do not fit
            try:
                collate([s], self.tokenizer, self.model_config, self.max_length)
                kept.append(j)
            except ValueError:
                self.skipped += 1
        if not kept:
            raise UserInputError(
                "every sample of a batch is longer than data.max_length; raise data.max_length."
            )
        batch = collate(
            [samples[j] for j in kept], self.tokenizer, self.model_config, self.max_length
        )
        return batch, kept


def _as_is(item: Any) -> Any:
    return item


def make_loader(stream: BatchStream, start: int, num_workers: int) -> torch.utils.data.DataLoader:
    """Yields micro-batches start, start+1, … (items are collated already)."""
    return torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        sampler=range(start, len(stream)),  # type: ignore[arg-type]
        num_workers=num_workers,
        collate_fn=_as_is,
        # Its own generator: creating the iterator must not draw from the global RNG, or a
        # resumed run's dropout masks would differ from an uninterrupted run's.
        generator=torch.Generator().manual_seed(0),
    )


def val_samples(datasets: dict[str, MeCoVQADataset], count: int) -> dict[str, list[LoadedSample]]:
    """The first `count` records of each task's validation split."""
    return {t: [ds[i] for i in range(min(count, len(ds)))] for t, ds in datasets.items()}
