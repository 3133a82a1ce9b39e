"""Reviewed answers written as a MeCoVQA corpus; `dataset_export` decides which answers.

The layout is the one `medplib data build` writes, so `medplib data check` and
`medplib train` read it unchanged::

    OUT/images/{modality}_00--review--{image id}--2d_none.png   the display PNG the model saw
    OUT/masks/{stem}--{k:04d}_000.png              each exported answer mask (SA-Med2D naming)
    OUT/masks_merged/{stem}--{k:04d}_merged.png    the same mask at class level, as MeCoVQA-G
                                                   answers point at (one instance per class)
    OUT/masks/{stem}--region-{t:03d}-{r:02d}.png   region prompts, rasterised
    OUT/{grounding,region,vqa}/train.json          one single-turn record per answer
    OUT/data_card.json, OUT/data_card.md           written by `dataset_card`

``k`` numbers an image's exported masks (reviewers' masks carry no class name, so each is a
class of its own and no ``classes.json`` is written); region masks are named so that
`medplib data merge-masks` and patch labels, which read SA-Med2D instance names, skip them.
Every answer is its own record: a follow-up ("and the other one?") loses the turns before it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medplib.conversation import normalize_region_tags
from medplib.data.files import write_png
from medplib.errors import UserInputError
from medplib.geometry import document_to_masks, document_to_prompts
from medplib.masks import decode_rle
from serving.store import ArtefactStore

TASKS = ("vqa", "region", "grounding")
SOURCE = "review"
# DICOM Modality codes → MeCoVQA's modality names; other hints are kept, lower-cased.
_MODALITY = {"ct": "ct", "mr": "mr", "pt": "pet", "us": "ultrasound", "cr": "xray", "dx": "xray"}
# Tags the MeCoVQA reader or the tokenizer would read as structure; a stored answer keeps
# only the <SEG> tags that its masks fill.
_SPECIAL = re.compile(r"<image>|</?region>|</?mask>|</?ref>|</?sr>|<gen_\d+>|<im_(?:start|end)>")
_END = re.compile(r"</?s>|<unk>")
_SEG = "<SEG>"
_PAIR = "<region></region>"


@dataclass(frozen=True)
class CorpusItem:
    """One reviewed answer as exported; `masks` holds the version chosen for each mask."""

    turn_id: str
    image_id: str
    display_key: str  # artefact-store key of the RGB PNG the model saw
    modality_hint: str | None
    height_px: int
    width_px: int
    question: str
    answer: str  # as shown
    raw_answer: str | None  # as decoded, <SEG> kept
    regions: list[dict[str, Any]]  # geometry JSON in original pixels, in <region> tag order
    masks_rle: tuple[dict[str, Any], ...]  # COCO RLE at the original size, in mask order
    corrected: bool  # at least one mask is a reviewer's corrected version
    checkpoint_id: str | None

    @property
    def task(self) -> str:
        return "grounding" if self.masks_rle else ("region" if self.regions else "vqa")

    @property
    def modality(self) -> str:
        hint = re.sub(r"[^a-z0-9]", "", (self.modality_hint or "").lower())
        return _MODALITY.get(hint, hint or "unknown")

    @property
    def stem(self) -> str:
        return f"{self.modality}_00--{SOURCE}--{self.image_id}--2d_none"


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s+([.,;:!?])", r"\1", text)


def _clean_question(text: str) -> str:
    # The record puts <image> in front itself; <SEG> and <mask> belong in answers only.
    return _tidy(re.sub(r"<image>|<SEG>|</?mask>", " ", text))


def _answer_with_seg(item: CorpusItem) -> str:
    """The answer with one <SEG> per exported mask: the model's own text where its <SEG>
    tokens match the masks, else the shown answer with the tags appended."""
    raw = _END.sub(" ", _SPECIAL.sub(" ", item.raw_answer or ""))
    if raw.count(_SEG) == len(item.masks_rle):
        return _tidy(raw)
    shown = _tidy(_SPECIAL.sub(" ", item.answer.replace(_SEG, " ")))
    return _tidy(f"{shown} {' '.join([_SEG] * len(item.masks_rle))}")


def problem(item: CorpusItem) -> str | None:
    """Why `item` cannot become a record that `medplib data check` accepts, or None.

    Cheap (no mask is rasterised), so a selection can be checked before anything is written.
    """
    if not _tidy(_SPECIAL.sub(" ", item.answer.replace(_SEG, " "))):
        return "the answer is empty"
    if any(_area(rle) == 0 for rle in item.masks_rle):
        return "an exported mask is empty"
    try:
        document_to_prompts(item.regions, height_px=item.height_px, width_px=item.width_px)
        normalize_region_tags(_clean_question(item.question), len(item.regions))
    except (UserInputError, ValueError) as exc:
        return f"its regions cannot be read ({exc})"
    return None


def _area(rle: dict[str, Any]) -> int:
    try:
        return int(decode_rle(rle).sum())
    except (ValueError, TypeError, KeyError):
        return 0


@dataclass
class CorpusCounts:
    records: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TASKS, 0))
    images: int = 0
    masks: int = 0  # exported answer masks (each in masks/ and masks_merged/)
    region_masks: int = 0


def _record(item: CorpusItem, question: str, answer: str) -> dict[str, Any]:
    first = answer.split(" ", 1)[0].strip(".,!").lower()
    return {
        "id": f"{SOURCE}-{item.turn_id}",
        "image": f"images/{item.stem}.png",
        "conversations": [
            {"from": "human", "value": f"<image>\n{question}"},
            {"from": "gpt", "value": answer},
        ],
        "answer_type": "closed" if first in ("yes", "no") else "open",
        "modality": item.modality,
        "source": SOURCE,
        "task": item.task,
        "split": "train",
        "origin": f"turn/{item.turn_id}",
        "corrected": item.corrected,
        "checkpoint": item.checkpoint_id,
    }


def _fill(text: str, marker: str, replacements: Sequence[str]) -> str:
    """`text` with its n-th `marker` replaced by the n-th replacement (counts must match)."""
    parts = text.split(marker)
    if len(parts) != len(replacements) + 1:
        raise ValueError(f"{len(parts) - 1} {marker} for {len(replacements)} replacements")
    return "".join(part + extra for part, extra in zip(parts, [*replacements, ""], strict=True))


class _Writer:
    """Writes files under `out`, numbering each image's masks and region turns as it goes."""

    def __init__(self, out: Path, store: ArtefactStore) -> None:
        self.out, self.store = out, store
        self.counts = CorpusCounts()
        self._masks: dict[str, int] = {}  # image stem → masks written
        self._region_turns: dict[str, int] = {}  # image stem → turns with regions written

    def image(self, item: CorpusItem) -> None:
        path = self.out / "images" / f"{item.stem}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.store.get(item.display_key))  # the bytes the model read
            self.counts.images += 1

    def question(self, item: CorpusItem) -> str:
        paths = []
        if item.regions:
            t = self._region_turns[item.stem] = self._region_turns.get(item.stem, 0) + 1
            hw = {"height_px": item.height_px, "width_px": item.width_px}
            for r, mask in enumerate(document_to_masks(item.regions, **hw), start=1):
                paths.append(f"masks/{item.stem}--region-{t:03d}-{r:02d}.png")
                write_png(self.out / paths[-1], mask)
            self.counts.region_masks += len(paths)
        # As the predictor does: every region reference becomes a pair, missing ones appended.
        text = normalize_region_tags(_clean_question(item.question), len(paths))
        return _fill(text, _PAIR, [f"<region>{p}</region>" for p in paths])

    def answer(self, item: CorpusItem) -> str:
        if not item.masks_rle:
            return _tidy(_SPECIAL.sub(" ", item.answer.replace(_SEG, " ")))
        paths = []
        for rle in item.masks_rle:
            k = self._masks[item.stem] = self._masks.get(item.stem, 0) + 1
            mask = decode_rle(rle)
            write_png(self.out / "masks" / f"{item.stem}--{k:04d}_000.png", mask)
            paths.append(f"masks_merged/{item.stem}--{k:04d}_merged.png")
            write_png(self.out / paths[-1], mask)
        self.counts.masks += len(paths)
        return _fill(_answer_with_seg(item), _SEG, [f"{_SEG}<mask>{p}</mask>" for p in paths])


def write_corpus(items: Sequence[CorpusItem], *, store: ArtefactStore, out: Path) -> CorpusCounts:
    """Write images, masks and ``{task}/train.json`` for `items` (each passed `problem`).

    Every task gets its file, empty or not, as `medplib data build` writes them.
    """
    writer = _Writer(out, store)
    records: dict[str, list[dict[str, Any]]] = {task: [] for task in TASKS}
    for item in items:
        writer.image(item)
        records[item.task].append(_record(item, writer.question(item), writer.answer(item)))
    for task in TASKS:
        (out / task).mkdir(parents=True, exist_ok=True)
        text = json.dumps(records[task], indent=1, ensure_ascii=False)
        (out / task / "train.json").write_text(text + "\n", encoding="utf-8")
        writer.counts.records[task] = len(records[task])
    for name in ("images", "masks", "masks_merged"):
        (out / name).mkdir(exist_ok=True)  # present even when no item needed one
    return writer.counts
