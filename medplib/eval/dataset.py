"""The evaluation set: one scored item per MeCoVQA record, with lazily loaded reference masks.

Each record is scored on its last turn; earlier turns are the conversation history (with their
reference answers, as teacher forcing). The item's task: "grounding" when the scored answer has
`<SEG>` targets, else "region" when any question of the record has regions, else "vqa".
A grounding answer with several targets is scored against their union.

Records whose structure, image or mask files are bad become `EvalProblem`s; they are never
silently dropped. An empty reference mask is kept (it is scored by the empty-mask rule).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medplib.data.files import FileReadError, image_size_hw, load_mask, resolve
from medplib.data.mecovqa import Sample, Turn, read_mecovqa
from medplib.errors import UserInputError
from medplib.masks import resize_mask_nearest

CLOSED_ANSWER_TYPES = ("closed", "yes/no", "yes_no", "yesno")  # MedPLIB's closed-question tags
_TAGS = re.compile(r"<SEG>|</?region>|<image>")
_MASK_CACHE = 256  # reference masks kept decoded (items of one image are usually adjacent)


@dataclass(frozen=True)
class EvalProblem:
    """A record, prediction line or model call that could not be scored, and why."""

    stage: str  # "data", "predictions", "model" or "scoring"
    index: int | None  # record index in the data file, or line number in a predictions file
    id: str | None
    reason: str

    def to_dict(self) -> dict:
        return {"stage": self.stage, "index": self.index, "id": self.id, "reason": self.reason}

    def __str__(self) -> str:
        where = f"line {self.index}" if self.stage == "predictions" else f"record {self.index}"
        return (
            f"{self.stage}: {where} (id {self.id if self.id is not None else '-'}): {self.reason}"
        )


@dataclass(frozen=True)
class EvalItem:
    """One record to score: its last turn, with everything needed to ask and to compare."""

    id: str
    index: int  # record position in the data file
    task: str  # "grounding", "region" or "vqa"
    modality: str
    source: str
    answer_type: str | None
    image_rel: str  # relative to the image root, as resolved (".png" appended if needed)
    image_hw: tuple[int, int]
    question: str  # scored turn; `<region></region>` pairs kept, one per region mask
    reference: str  # scored turn's reference answer without `<SEG>` / `<region>` tags
    region_paths: tuple[str, ...]  # scored turn's region masks, relative to the image root
    target_paths: tuple[str, ...]  # scored turn's reference masks (grounding)
    history: tuple[Turn, ...] = ()  # earlier turns, oldest first
    question_kind: str | None = None  # template family, where the record names it

    @property
    def closed(self) -> bool:
        """A closed question: tagged closed or yes/no; untagged ones when the reference is yes/no."""
        if self.answer_type is not None:
            return self.answer_type.strip().lower() in CLOSED_ANSWER_TYPES
        return strip_tags(self.reference).strip(" .!").lower() in ("yes", "no")

    @property
    def target_key(self) -> tuple[str, ...]:
        """Identity of the reference: the sorted set of its mask paths."""
        return tuple(sorted(set(self.target_paths)))


def strip_tags(text: str) -> str:
    """Text without `<SEG>`, `<image>` and `<region>` tags, whitespace collapsed."""
    return " ".join(_TAGS.sub(" ", text).split())


@dataclass
class EvalSet:
    """Items in file order (first `limit`), problems, and every grounding target of the file.

    `other_targets(item)` lists the reference masks of *other* grounding records on the same
    image (also beyond `limit`), for the question-ignoring check.
    """

    data_path: Path
    image_root: Path
    items: list[EvalItem]
    problems: list[EvalProblem]
    records_in_file: int
    file_ids: set[str] = field(default_factory=set)  # every record id of the file, bad ones too
    _targets_by_image: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)
    _cache: OrderedDict[tuple[tuple[str, ...], tuple[int, int]], np.ndarray] = field(
        default_factory=OrderedDict
    )

    @property
    def by_id(self) -> dict[str, EvalItem]:
        return {item.id: item for item in self.items}

    def other_targets(self, item: EvalItem) -> list[tuple[str, ...]]:
        own = item.target_key
        return [k for k in self._targets_by_image.get(item.image_rel, []) if k != own]

    def target_mask(self, paths: tuple[str, ...], image_hw: tuple[int, int]) -> np.ndarray:
        """Union of the masks at `paths`, at the image size; raises ValueError if one fails.

        A mask of another size than its image is resized with nearest neighbour, as the
        MeCoVQA reader does.
        """
        key = (tuple(paths), (int(image_hw[0]), int(image_hw[1])))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        out = np.zeros(image_hw, dtype=bool)
        for rel in paths:
            out |= self.load_mask(rel, image_hw)
        self._cache[key] = out
        if len(self._cache) > _MASK_CACHE:
            self._cache.popitem(last=False)
        return out

    def load_mask(self, rel: str, image_hw: tuple[int, int]) -> np.ndarray:
        """One mask file at the image size; raises ValueError naming the file if it fails."""
        path, _ = resolve(self.image_root, rel)
        if path is None:
            raise ValueError(f"mask {rel} not found under {self.image_root}")
        try:
            mask = load_mask(path)
        except FileReadError as exc:
            raise ValueError(f"mask {rel}: {exc}") from None
        if mask.shape != tuple(image_hw):
            mask = resize_mask_nearest(mask, image_hw)
        return mask

    def image_path(self, item: EvalItem) -> Path:
        return self.image_root / item.image_rel


def _resolved(root: Path, rel: str, what: str) -> str:
    path, fixed = resolve(root, rel)
    if path is None:
        raise ValueError(f"{what} {rel} not found under {root}")
    return f"{rel}.png" if fixed else rel


def _item(sample: Sample, root: Path, image_rel: str, hw: tuple[int, int]) -> EvalItem:
    *history, last = sample.turns
    for turn in sample.turns:
        for rel in (*turn.region_mask_paths, *turn.target_mask_paths):
            _resolved(root, rel, "mask")
    if last.target_mask_paths:
        task = "grounding"
    elif any(t.region_mask_paths for t in sample.turns):
        task = "region"  # the regions of earlier turns stay in the model's context
    else:
        task = "vqa"

    def fix(paths: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_resolved(root, p, "mask") for p in paths)

    history_fixed = tuple(
        Turn(t.question, t.answer, fix(t.region_mask_paths), fix(t.target_mask_paths))
        for t in history
    )
    return EvalItem(
        id=sample.id,
        index=sample.index,
        task=task,
        modality=sample.modality,
        source=sample.source or "unknown",
        answer_type=sample.answer_type,
        image_rel=image_rel,
        image_hw=hw,
        question=last.question,
        reference=strip_tags(last.answer),
        region_paths=fix(last.region_mask_paths),
        target_paths=fix(last.target_mask_paths),
        history=history_fixed,
        question_kind=sample.question_kind,
    )


def load_eval_set(
    data_path: str | Path, image_root: str | Path, *, limit: int | None = None
) -> EvalSet:
    """Read a MeCoVQA JSON file into scored items; bad records become problems.

    `limit` keeps the first N valid items (every grounding record still counts for
    `other_targets`). Raises `UserInputError` for a file-level error: a missing or non-JSON
    data file, an image root that is not a folder, a `limit` below 1.
    """
    if limit is not None and limit < 1:
        raise UserInputError(f"--limit must be 1 or more; got {limit}.")
    root = Path(image_root)
    if not root.is_dir():
        raise UserInputError(f"image root {root} is not a folder; pass the folder holding images/.")
    report = read_mecovqa(data_path, root, check_files=False)
    problems = [EvalProblem("data", p.index, p.id, p.reason) for p in report.problems]
    items: list[EvalItem] = []
    seen: set[str] = set()
    targets: dict[str, list[tuple[str, ...]]] = {}
    image_hw: dict[str, tuple[str, tuple[int, int]] | str] = {}
    for sample in report.samples:
        try:
            if sample.image_path not in image_hw:
                try:
                    rel = _resolved(root, sample.image_path, "image")
                    image_hw[sample.image_path] = (rel, image_size_hw(root / rel))
                except (ValueError, FileReadError) as exc:
                    image_hw[sample.image_path] = str(exc)
            found = image_hw[sample.image_path]
            if isinstance(found, str):
                raise ValueError(found)
            item = _item(sample, root, *found)
        except ValueError as exc:
            problems.append(EvalProblem("data", sample.index, sample.id, str(exc)))
            continue
        if item.id in seen:
            problems.append(
                EvalProblem("data", item.index, item.id, "duplicate id; the first record is kept")
            )
            continue
        seen.add(item.id)
        if item.task == "grounding":
            keys = targets.setdefault(item.image_rel, [])
            if item.target_key not in keys:
                keys.append(item.target_key)
        if limit is None or len(items) < limit:
            items.append(item)
    if limit is not None and len(items) == limit:
        # Records past the limit are not evaluated, so their problems are not reported.
        problems = [p for p in problems if p.index is None or p.index <= items[-1].index]
    problems.sort(key=lambda p: p.index if p.index is not None else -1)
    return EvalSet(
        data_path=Path(data_path),
        image_root=root,
        items=items,
        problems=problems,
        records_in_file=report.counts.records,
        file_ids={s.id for s in report.samples}
        | {p.id if p.id is not None else str(p.index) for p in report.problems},
        _targets_by_image=targets,
    )
