"""Helpers for the data tests: the shared realdata location, record and file writers."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REALDATA = Path(__file__).resolve().parents[4] / "shared" / "realdata"
DEMO = REALDATA / "sam-med2d-demo"

# demo image stem → official SA-Med2D stem ({modality}_{sub}--{dataset}--{case}--{axis}_{index})
OFFICIAL_STEMS = {
    "amos_0004_75": "ct_00--AMOS--amos_0004--z_0075",
    "amos_0006_90": "ct_00--AMOS--amos_0006--z_0090",
    "s0114_111": "ct_00--TotalSegmentator--s0114--z_0111",
    "s0619_32": "ct_00--TotalSegmentator--s0619--z_0032",
}


def needs_realdata() -> None:
    if not (REALDATA / "splits.csv").is_file():
        pytest.skip(f"shared realdata folder not found at {REALDATA}")


def demo_rows() -> list[dict]:
    with (DEMO / "manifest.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def class_ids() -> dict[str, int]:
    """Label text → class id, numbered in sorted label order (as SA-Med2D's mapping file does)."""
    return {t: i + 1 for i, t in enumerate(sorted({r["target"] for r in demo_rows()}))}


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)
    image.save(path)
    return path


def record(image: str, question: str, answer: str, **extra) -> dict:
    return {
        "image": image,
        "conversations": [
            {"from": "human", "value": question},
            {"from": "gpt", "value": answer},
        ],
        **extra,
    }


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path
