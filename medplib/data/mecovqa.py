"""Read MeCoVQA files: LLaVA-style conversation records over SA-Med2D-20M images and masks.

A record::

    {"id": ..., "image": "images/ct_00--AMOS--amos_0004--z_0075.png",
     "conversations": [{"from": "human", "value": "<image>\\nWhat is in <region>masks/….png</region>?"},
                       {"from": "gpt", "value": "The liver: <SEG><mask>masks_merged/….png</mask>."}],
     "answer_type": "open", "modality": "ct", "source": "AMOS", "task": "grounding"}

`medplib data build` adds ``"question_kind"`` (the template family: "presence", "side",
"verify-region", …), which reports use to break accuracy down; MeCoVQA's own files lack it.

Region masks sit inside ``<region>…</region>`` in questions; target masks inside
``<mask>…</mask>`` right after a ``<SEG>`` in answers. Reading keeps the tags the model sees
(``<region></region>``, ``<SEG>``) and moves the paths into `Turn`. Every bad record is reported
with its index and skipped; only an unreadable file as a whole raises `UserInputError`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medplib.data.files import (
    FileReadError,
    image_size_hw,
    load_image_rgb,
    load_mask,
    read_mask,
    resolve,
)
from medplib.errors import UserInputError
from medplib.masks import resize_mask_nearest

__all__ = [
    "Problem",
    "ReadCounts",
    "ReadReport",
    "Sample",
    "Turn",
    "load_image_rgb",
    "load_mask",
    "parse_record",
    "read_mecovqa",
]

TASKS = ("vqa", "region", "grounding")
_TAG = re.compile(r"<image>|<SEG>|</?region>|</?mask>")
_ROLES = ("human", "gpt")


@dataclass(frozen=True)
class Turn:
    """One question/answer pair with the mask paths moved out of the text.

    `question` keeps an empty ``<region></region>`` pair per region; `answer` keeps ``<SEG>`` and
    loses its ``<mask>…</mask>`` tags. Paths are relative to the image root, in reading order.
    """

    question: str
    answer: str
    region_mask_paths: tuple[str, ...] = ()
    target_mask_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sample:
    id: str  # the record's `id`, else its index in the file
    image_path: str  # relative to the image root, `.png` added where the file needed it
    turns: tuple[Turn, ...]
    task: str  # "grounding" if any <SEG>, else "region" if any <region>, else "vqa"
    modality: str  # record field, else the SA-Med2D file-name prefix ("ct_00--…" → "ct")
    source: str | None  # record field, else the SA-Med2D dataset name ("ct_00--AMOS--…" → "AMOS")
    answer_type: str | None
    index: int = -1  # position of the record in its file
    # Optional record field naming the question's template family ("presence", "side",
    # "verify-region", …), so a report can say which kind of question fails.
    question_kind: str | None = None

    @property
    def mask_paths(self) -> tuple[str, ...]:
        return tuple(p for t in self.turns for p in (*t.region_mask_paths, *t.target_mask_paths))


@dataclass(frozen=True)
class Problem:
    index: int  # record position in the file
    id: str  # the record's `id`, else its index (as for `Sample.id`)
    reason: str

    def __str__(self) -> str:
        return f"#{self.index} {self.id}: {self.reason}"


@dataclass
class ReadCounts:
    records: int = 0
    valid: int = 0
    skipped: int = 0
    suffix_fixed: int = 0  # distinct paths that only resolved once ".png" was appended
    by_task: dict[str, int] = field(default_factory=dict)
    by_modality: dict[str, int] = field(default_factory=dict)


@dataclass
class ReadReport:
    samples: list[Sample]
    problems: list[Problem]  # records skipped, with the reason
    counts: ReadCounts
    notes: list[Problem] = field(default_factory=list)  # kept records that needed a fix-up
    image_root: Path = field(default_factory=Path)


class _BadRecord(Exception):
    pass


def modality_from_name(image_path: str) -> str:
    """SA-Med2D modality prefix: the file name's text before the first ``_``, lower-cased."""
    name = Path(image_path).name
    return name.split("_", 1)[0].lower() if "_" in name else "unknown"


def source_from_name(image_path: str) -> str | None:
    parts = Path(image_path).name.split("--")
    return parts[1] if len(parts) >= 3 else None


def _split_tags(text: str, role: str, turn: int) -> tuple[str, list[str], int, int]:
    """Strip mask paths out of one turn; returns (clean text, paths, #<SEG>, #<image>)."""
    where = f"turn {turn} ({role})"
    out: list[str] = []
    paths: list[str] = []
    seg = images = 0
    pos = 0
    open_tag: str | None = None
    open_at = 0
    for m in _TAG.finditer(text):
        tag = m.group(0)
        if open_tag is None:
            out.append(text[pos : m.start()])
        pos = m.end()
        if tag == "<image>":
            if role != "human":
                raise _BadRecord(f"{where}: <image> belongs in a human question, not an answer")
            images += 1
            out.append(tag)
            continue
        if tag == "<SEG>":
            if role != "gpt":
                raise _BadRecord(f"{where}: <SEG> belongs in a gpt answer, not a question")
            seg += 1
            out.append(tag)
            continue
        name = tag.strip("</>")
        allowed = "region" if role == "human" else "mask"
        if name != allowed:
            other = "human question" if name == "region" else "gpt answer"
            raise _BadRecord(f"{where}: <{name}> tags belong in a {other}")
        if not tag.startswith("</"):
            if open_tag is not None:
                raise _BadRecord(f"{where}: <{name}> opened again before </{name}>")
            open_tag, open_at = name, m.end()
            continue
        if open_tag is None:
            raise _BadRecord(f"{where}: </{name}> without a matching <{name}>")
        path = text[open_at : m.start()].strip()
        if not path:
            raise _BadRecord(f"{where}: empty <{name}></{name}> (no mask path inside)")
        paths.append(path)
        if name == "region":
            out.append("<region></region>")  # the model sees the tag pair, not the path
        open_tag = None
    if open_tag is not None:
        raise _BadRecord(f"{where}: <{open_tag}> is never closed")
    out.append(text[pos:])
    return "".join(out), paths, seg, images


def _turns(conversations: Any) -> tuple[Turn, ...]:
    if not isinstance(conversations, list):
        raise _BadRecord(f"'conversations' must be a list, not {type(conversations).__name__}")
    if not conversations:
        raise _BadRecord("'conversations' is empty")
    texts: list[str] = []
    for i, message in enumerate(conversations):
        if not isinstance(message, dict) or "from" not in message or "value" not in message:
            raise _BadRecord(f"turn {i} is not an object with 'from' and 'value'")
        role = str(message["from"]).lower()
        expected = _ROLES[i % 2]
        if role != expected:
            raise _BadRecord(
                f"turn {i} is from {role!r} but {expected!r} was expected "
                "(roles must alternate human, gpt)"
            )
        texts.append(str(message["value"]))  # the reference loader casts values to str too
    if len(texts) % 2:
        raise _BadRecord("the last human question has no gpt answer")
    turns = []
    image_tags = 0
    for k in range(0, len(texts), 2):
        question, regions, _, images = _split_tags(texts[k], "human", k)
        answer, targets, seg, _ = _split_tags(texts[k + 1], "gpt", k + 1)
        image_tags += images
        if seg > len(targets):
            raise _BadRecord(f"turn {k + 1} (gpt): <SEG> without a <mask> path")
        if len(targets) > seg:
            raise _BadRecord(f"turn {k + 1} (gpt): <mask> path without a <SEG>")
        turns.append(Turn(question, answer, tuple(regions), tuple(targets)))
    if image_tags > 1:
        raise _BadRecord(f"{image_tags} <image> tags; a record has one image")
    return tuple(turns)


def _optional_str(record: dict, key: str) -> str | None:
    value = record.get(key)
    if value is None or value == "":
        return None
    return str(value)


def parse_record(record: Any, index: int) -> Sample:
    """Validate one record's structure and tags (no file access); raises ValueError with the reason."""
    try:
        if not isinstance(record, dict):
            raise _BadRecord(f"record is a {type(record).__name__}, not an object")
        image = record.get("image")
        if not isinstance(image, str) or not image.strip():
            raise _BadRecord("'image' is missing or not a non-empty string")
        turns = _turns(record.get("conversations"))
    except _BadRecord as exc:
        raise ValueError(str(exc)) from None
    if any(t.target_mask_paths for t in turns):
        task = "grounding"
    elif any(t.region_mask_paths for t in turns):
        task = "region"
    else:
        task = "vqa"
    rid = _optional_str(record, "id")
    return Sample(
        id=rid if rid is not None else str(index),
        image_path=image.strip(),
        turns=turns,
        task=task,
        modality=(_optional_str(record, "modality") or modality_from_name(image)).lower(),
        source=_optional_str(record, "source") or source_from_name(image),
        answer_type=_optional_str(record, "answer_type"),
        index=index,
        question_kind=_optional_str(record, "question_kind"),
    )


def _record_id(record: Any, index: int) -> str:
    if isinstance(record, dict) and record.get("id") not in (None, ""):
        return str(record["id"])
    return str(index)


def load_records(json_path: str | Path) -> list:
    """The list of records in a MeCoVQA JSON file; `UserInputError` if the file is not one."""
    path = Path(json_path)
    if not path.is_file():
        raise UserInputError(f"{path} does not exist or is not a file; pass a MeCoVQA JSON file.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserInputError(
            f"{path} is not UTF-8 text ({exc}); pass a MeCoVQA JSON file."
        ) from None
    except json.JSONDecodeError as exc:
        raise UserInputError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "fix or re-download the file."
        ) from None
    if not isinstance(data, list):
        raise UserInputError(
            f"{path} holds a JSON {type(data).__name__}, but a MeCoVQA file is a list of records."
        )
    return data


def _find(root: Path, rel: str, what: str) -> tuple[Path, str]:
    """The file for `rel` and its relative path, `.png` appended where only that exists."""
    path, fixed = resolve(root, rel)
    if path is None:
        raise _BadRecord(f"{what} {rel} not found under {root}")
    return path, f"{rel}.png" if fixed else rel


class _FileChecker:
    """Opens each image and mask once, however many records share it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.suffix_fixed = 0
        self._images: dict[str, tuple[str, tuple[int, int]] | str] = {}
        self._masks: dict[str, tuple[str, tuple[int, int], tuple[str, ...]] | str] = {}

    def _resolve(self, rel: str, what: str) -> tuple[Path, str]:
        path, fixed_rel = _find(self.root, rel, what)
        self.suffix_fixed += fixed_rel != rel
        return path, fixed_rel

    def image(self, rel: str) -> tuple[str, tuple[int, int]]:
        if rel not in self._images:
            try:
                path, fixed_rel = self._resolve(rel, "image")
                self._images[rel] = (fixed_rel, image_size_hw(path))
            except (_BadRecord, FileReadError) as exc:
                self._images[rel] = (
                    f"image {rel}: {exc}" if isinstance(exc, FileReadError) else str(exc)
                )
        found = self._images[rel]
        if isinstance(found, str):
            raise _BadRecord(found)
        return found

    def mask(self, rel: str) -> tuple[str, tuple[int, int], tuple[str, ...]]:
        if rel not in self._masks:
            try:
                path, fixed_rel = self._resolve(rel, "mask")
                read = read_mask(path)
                if not read.mask.any():
                    raise _BadRecord(f"mask {rel} is empty (no foreground pixel)")
                height, width = read.mask.shape
                self._masks[rel] = (fixed_rel, (height, width), read.notes)
            except _BadRecord as exc:
                self._masks[rel] = str(exc)
            except FileReadError as exc:
                self._masks[rel] = f"mask {rel}: {exc}"
        found = self._masks[rel]
        if isinstance(found, str):
            raise _BadRecord(found)
        return found

    def check(self, sample: Sample) -> tuple[Sample, list[str]]:
        """The sample with suffix-fixed paths, and notes; raises _BadRecord on a missing/bad file."""
        image_rel, image_hw = self.image(sample.image_path)
        notes: list[str] = []
        turns = []
        for turn in sample.turns:
            fixed: list[list[str]] = [[], []]
            for slot, paths in enumerate((turn.region_mask_paths, turn.target_mask_paths)):
                for rel in paths:
                    mask_rel, mask_hw, mask_notes = self.mask(rel)
                    fixed[slot].append(mask_rel)
                    notes.extend(f"mask {rel}: {n}" for n in mask_notes)
                    if mask_hw != image_hw:
                        notes.append(
                            f"mask {rel} is {mask_hw[1]}x{mask_hw[0]} but the image is "
                            f"{image_hw[1]}x{image_hw[0]}; resized with nearest neighbour"
                        )
            turns.append(Turn(turn.question, turn.answer, tuple(fixed[0]), tuple(fixed[1])))
        return replace(sample, image_path=image_rel, turns=tuple(turns)), notes


def read_mecovqa(
    json_path: str | Path, image_root: str | Path, *, check_files: bool = True
) -> ReadReport:
    """Parse a MeCoVQA JSON file; every bad record becomes a `Problem` and is skipped.

    With `check_files`, each image and mask is opened: missing, unreadable and empty files are
    problems; colour masks and masks of another size than their image are notes.
    """
    records = load_records(json_path)
    root = Path(image_root)
    if check_files and not root.is_dir():
        raise UserInputError(f"image root {root} is not a folder; pass the folder holding images/.")
    checker = _FileChecker(root)
    report = ReadReport(samples=[], problems=[], counts=ReadCounts(records=len(records)))
    report.image_root = root
    by_task: Counter[str] = Counter()
    by_modality: Counter[str] = Counter()
    for index, record in enumerate(records):
        try:
            sample = parse_record(record, index)
            if check_files:
                sample, notes = checker.check(sample)
                report.notes.extend(Problem(index, sample.id, n) for n in notes)
            _check_task_field(record, sample, report.notes)
        except (ValueError, _BadRecord) as exc:
            report.problems.append(Problem(index, _record_id(record, index), str(exc)))
            continue
        report.samples.append(sample)
        by_task[sample.task] += 1
        by_modality[sample.modality] += 1
    counts = report.counts
    counts.valid = len(report.samples)
    counts.skipped = len(report.problems)
    counts.suffix_fixed = checker.suffix_fixed
    counts.by_task = {t: by_task[t] for t in TASKS if by_task[t]}
    counts.by_modality = dict(sorted(by_modality.items()))
    return report


def _check_task_field(record: dict, sample: Sample, notes: list[Problem]) -> None:
    declared = record.get("task")
    if declared is not None and str(declared).lower() != sample.task:
        notes.append(
            Problem(
                sample.index,
                sample.id,
                f"'task' says {declared!r} but the tags make it {sample.task!r}; using {sample.task!r}",
            )
        )


def format_report(report: ReadReport) -> Iterator[str]:
    """Lines of the `medplib data check` report."""
    for problem in report.problems:
        yield str(problem)
    for note in report.notes:
        yield f"#{note.index} {note.id}: note: {note.reason}"
    c = report.counts
    if c.suffix_fixed:
        yield f"{c.suffix_fixed} path(s) resolved only after appending .png"
    yield "task: " + (", ".join(f"{k} {v}" for k, v in c.by_task.items()) or "none")
    yield "modality: " + (", ".join(f"{k} {v}" for k, v in c.by_modality.items()) or "none")
    yield f"{c.valid} valid, {c.skipped} skipped"


@dataclass(frozen=True)
class LoadedTurn:
    question: str
    answer: str
    region_masks: tuple[np.ndarray, ...]  # bool (H, W), image size
    target_masks: tuple[np.ndarray, ...]  # bool (H, W), image size


@dataclass(frozen=True)
class LoadedSample:
    sample: Sample
    image: np.ndarray  # (H, W, 3) uint8 RGB
    turns: tuple[LoadedTurn, ...]

    @property
    def qa_pairs(self) -> list[tuple[str, str]]:
        return [(t.question, t.answer) for t in self.turns]

    @property
    def regions(self) -> list[np.ndarray]:
        """All region masks in the order of their <region> tags over the questions."""
        return [m for t in self.turns for m in t.region_masks]

    @property
    def target_masks(self) -> list[np.ndarray]:
        """One mask per <SEG>, in reading order over the answers."""
        return [m for t in self.turns for m in t.target_masks]


def load_sample(sample: Sample, image_root: Path) -> tuple[LoadedSample, list[str]]:
    """Decode a sample's image and masks; raises ValueError with the reason if one fails."""
    try:
        image = load_image_rgb(_find(image_root, sample.image_path, "image")[0])
        hw = image.shape[:2]
        notes: list[str] = []
        turns = []
        for turn in sample.turns:
            loaded: list[list[np.ndarray]] = [[], []]
            for slot, paths in enumerate((turn.region_mask_paths, turn.target_mask_paths)):
                for rel in paths:
                    path, _ = _find(image_root, rel, "mask")
                    mask = load_mask(path)
                    if not mask.any():
                        raise _BadRecord(f"mask {rel} is empty (no foreground pixel)")
                    if mask.shape != hw:
                        notes.append(f"mask {rel} resized to the image size")
                        mask = resize_mask_nearest(mask, hw)
                    loaded[slot].append(mask)
            turns.append(LoadedTurn(turn.question, turn.answer, tuple(loaded[0]), tuple(loaded[1])))
    except (_BadRecord, FileReadError) as exc:
        raise ValueError(str(exc)) from None
    return LoadedSample(sample=sample, image=image, turns=tuple(turns)), notes


class MeCoVQADataset:
    """Lazy, torch-free map-style dataset over one MeCoVQA file.

    Records are validated when the dataset is built (structure and tags always; files only with
    `check_files`). A sample whose files fail to load at access time is replaced by the next one
    that loads, and the failure is appended to `problems`, so an epoch never stops half-way.
    """

    def __init__(
        self, json_path: str | Path, image_root: str | Path, *, check_files: bool = False
    ) -> None:
        self.json_path = Path(json_path)
        self.image_root = Path(image_root)
        report = read_mecovqa(self.json_path, self.image_root, check_files=check_files)
        if not report.samples:
            raise UserInputError(
                f"{self.json_path} has no valid record ({report.counts.skipped} skipped); "
                "run `medplib data check` on it to see why."
            )
        self.samples: list[Sample] = report.samples
        self.problems: list[Problem] = list(report.problems)
        self.notes: list[Problem] = list(report.notes)
        self._failed: set[int] = set()
        self._noted: set[int] = set()  # notes are recorded once per sample, not once per epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> LoadedSample:
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        for step in range(n):
            k = (index + step) % n
            if k in self._failed:
                continue
            sample = self.samples[k]
            try:
                loaded, notes = load_sample(sample, self.image_root)
            except ValueError as exc:
                self._failed.add(k)
                self.problems.append(Problem(sample.index, sample.id, f"at load time: {exc}"))
                continue
            if k not in self._noted:
                self._noted.add(k)
                self.notes.extend(Problem(sample.index, sample.id, note) for note in notes)
            return loaded
        raise UserInputError(
            f"none of the {n} samples of {self.json_path} could be loaded; "
            "run `medplib data check` on it to see why."
        )
