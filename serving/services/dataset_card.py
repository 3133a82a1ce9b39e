"""The data card of an exported review corpus: what was selected, and who reviewed what.

Written twice, as ``data_card.json`` (for code) and ``data_card.md`` (for people), from the
same numbers, like the card of `medplib data build`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from serving.services.dataset_corpus import TASKS, CorpusCounts, CorpusItem

NAME = "MedPLIB reviewed answers (MeCoVQA format)"


@dataclass(frozen=True)
class ReviewerCredit:
    """What one person contributed to an export: answers rated and masks corrected."""

    username: str
    display_name: str
    items: int  # exported answers this person rated or corrected
    rated: int  # exported answers this person rated (any rating)
    corrected: int  # exported answers whose exported mask is this person's correction


def card_data(
    *,
    selection: Mapping[str, Any],
    items: Sequence[CorpusItem],
    counts: CorpusCounts,
    reviewers: Sequence[ReviewerCredit],
    skipped: Sequence[Mapping[str, str]],
) -> dict[str, Any]:
    return {
        "name": NAME,
        "selection": dict(selection),
        "items": len(items),
        "corrected": sum(item.corrected for item in items),
        "records": dict(counts.records),
        "images": counts.images,
        "masks": counts.masks,
        "region_masks": counts.region_masks,
        "reviewers": [asdict(r) for r in reviewers],
        "checkpoints": dict(Counter(item.checkpoint_id or "unknown" for item in items)),
        "skipped": [dict(s) for s in skipped],
    }


def _cell(text: str) -> str:
    # Display names are typed by users: keep them inside their table cell.
    return " ".join(text.split()).replace("|", "\\|")


def write_card(out: Path, data: Mapping[str, Any]) -> None:
    (out / "data_card.json").write_text(
        json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    selection = data["selection"]
    md = [
        f"# Data card: {NAME}",
        "",
        "Answers that reviewers accepted or whose masks they corrected, exported by "
        "`medplib review export-dataset` for fine-tuning (`medplib train --stage moe --init`). "
        "Every record is in the train split; grounding answers point at the corrected mask "
        "where there is one, else at the model's accepted mask.",
        "",
        "## Selection",
        "",
        f"- rule: {selection['rule']}",
        f"- class link: {selection['class_link_id'] or 'any'}",
        f"- rated or corrected since: {selection['since'] or 'any time'}",
        "",
        "## Contents",
        "",
        f"{data['items']} answers, {data['corrected']} of them with a corrected mask; "
        f"{data['images']} images, {data['masks']} answer masks, "
        f"{data['region_masks']} region masks.",
        "",
        "| task | records |",
        "|---|---:|",
        *[f"| {task} | {data['records'][task]} |" for task in TASKS],
        "",
        "## Reviewers",
        "",
        "| reviewer | username | answers | rated | corrected |",
        "|---|---|---:|---:|---:|",
        *[
            f"| {_cell(r['display_name'])} | {r['username']} | {r['items']} | {r['rated']} "
            f"| {r['corrected']} |"
            for r in data["reviewers"]
        ],
        "",
        "## Answering checkpoints",
        "",
        *[f"- `{name}`: {n}" for name, n in sorted(data["checkpoints"].items())],
        "",
    ]
    if data["skipped"]:
        md += [
            "## Left out",
            "",
            *[f"- turn {s['turn_id']}: {s['reason']}" for s in data["skipped"]],
            "",
        ]
    (out / "data_card.md").write_text("\n".join(md), encoding="utf-8")
