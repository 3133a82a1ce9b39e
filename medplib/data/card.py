"""The data card of a built corpus: what is in it, where it came from, under which licence.

Written twice, as ``data_card.json`` (for code) and ``data_card.md`` (for people), from the
same numbers. Nothing time- or machine-dependent goes in, so a rebuild gives the same bytes.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

SPLIT_ORDER = ("train", "val", "holdout", "zeroshot")

SPLIT_RULES = (
    "Synthetic images are split train/val/holdout by a seeded shuffle (no zero-shot synthetic). "
    "Real images keep the split of their source file in realdata/splits.csv: `train` items go to "
    "train or val (one source file, e.g. a whole volume, or one patient of a patch file, to one "
    "side), `holdout` items only to "
    "holdout.json and `zero-shot` items only to zeroshot.json. Never train, tune or select "
    "checkpoints on holdout or zeroshot files."
)
SYNTHETIC = (
    "Synthetic scenes for the eight MeCoVQA modalities (CT, MR, PET, X-ray, ultrasound, "
    "endoscopy, fundus, dermoscopy), painted by `medplib.data.synthetic` with exact masks for "
    "every named structure. Each image names at least two structures; grounding answers name "
    "the target before <SEG> so that a model has to read the question."
)


def _table(counts: dict[str, Counter], row_title: str) -> list[str]:
    cols = [s for s in SPLIT_ORDER if any(c[s] for c in counts.values())]
    lines = [
        f"| {row_title} | " + " | ".join(cols) + " | total |",
        "|---|" + "---:|" * (len(cols) + 1),
    ]
    for key in sorted(counts):
        c = counts[key]
        lines.append(
            f"| {key} | " + " | ".join(str(c[s]) for s in cols) + f" | {sum(c.values())} |"
        )
    return lines


def _by(records: list[dict], key: str, unique_images: bool = False) -> dict[str, Counter]:
    out: dict[str, Counter] = defaultdict(Counter)
    seen: set[str] = set()
    for r in records:
        if unique_images:
            if r["image"] in seen:
                continue
            seen.add(r["image"])
        out[r[key]][r["split"]] += 1
    return dict(out)


def source_table(records: list[dict], credits: dict[str, dict[str, str]]) -> dict[str, dict]:
    """Per source: its short licence name and its images and records per split."""
    images, recs = _by(records, "source", True), _by(records, "source")
    return {
        source: {
            "licence": credits.get(source, {}).get("licence_name")
            or ("generated here" if source == "synthetic" else "unknown"),
            "images": {s: images[source][s] for s in SPLIT_ORDER if images[source][s]},
            "records": {s: recs[source][s] for s in SPLIT_ORDER if recs[source][s]},
        }
        for source in sorted(images)
    }


def _source_lines(table: dict[str, dict]) -> list[str]:
    lines = [
        "| source | licence | images train / val / holdout / zeroshot | records (same splits) |",
        "|---|---|---|---|",
    ]
    for source, row in table.items():
        counts = [
            " / ".join(str(row[k].get(s, 0)) for s in SPLIT_ORDER) for k in ("images", "records")
        ]
        lines.append(f"| {source} | {row['licence']} | {counts[0]} | {counts[1]} |")
    return lines


def card_data(
    records: list[dict], settings: dict, credits: dict[str, dict[str, str]], notes: list[str]
) -> dict:
    plain = lambda d: {k: {s: v[s] for s in SPLIT_ORDER if v[s]} for k, v in sorted(d.items())}  # noqa: E731
    sources = sorted({r["source"] for r in records})
    return {
        "name": "MedPLIB demo corpus (MeCoVQA format)",
        "settings": settings,
        "split_rules": SPLIT_RULES,
        "synthetic": SYNTHETIC,
        "records": {
            "by_task": plain(_by(records, "task")),
            "by_modality": plain(_by(records, "modality")),
            "by_source": plain(_by(records, "source")),
            "by_answer_type": plain(_by(records, "answer_type")),
        },
        "images": {
            "by_modality": plain(_by(records, "modality", True)),
            "by_source": plain(_by(records, "source", True)),
        },
        "sources": source_table(records, credits),
        "credits": {s: credits[s] for s in sources if s in credits},
        "notes": notes,
    }


def write_card(
    out: Path,
    records: list[dict],
    settings: dict,
    credits: dict[str, dict[str, str]],
    notes: list[str],
) -> None:
    data = card_data(records, settings, credits, notes)
    (out / "data_card.json").write_text(
        json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    md = [
        "# Data card: MedPLIB demo corpus (MeCoVQA format)",
        "",
        "Records are LLaVA conversations: `image`, `conversations` (human/gpt), `answer_type`, "
        "`modality`, `source`, `task`, `split`, `origin`. Region questions hold "
        "`<region>masks/….png</region>`; grounding answers hold `<SEG><mask>masks/….png</mask>`.",
        "",
        "## Build settings",
        "",
        *[f"- `{k}`: {v}" for k, v in settings.items()],
        "",
        "## Splits",
        "",
        SPLIT_RULES,
        "",
        "## Synthetic data",
        "",
        SYNTHETIC,
        "",
        "## Records",
        "",
        *_table(_by(records, "task"), "task"),
        "",
        *_table(_by(records, "answer_type"), "answer type"),
        "",
        "## Sources",
        "",
        "Licence names in short; the full licence paragraph of each real source is quoted below. "
        "Only `train` items of permissive sources are trained on.",
        "",
        *_source_lines(data["sources"]),
        "",
        "## Images",
        "",
        *_table(_by(records, "modality", True), "modality"),
        "",
        *_table(_by(records, "source", True), "source"),
        "",
    ]
    if data["credits"]:
        md += ["## Sources, licences and credits", ""]
        for source, entry in data["credits"].items():
            md += [
                f"### {source}",
                "",
                f"*{entry['title']}*",
                "",
                entry["origin"],
                "",
                entry["licence"],
                "",
            ]
    if notes:
        md += ["## Skipped while reading the real data", "", *[f"- {n}" for n in notes], ""]
    (out / "data_card.md").write_text("\n".join(md), encoding="utf-8")
