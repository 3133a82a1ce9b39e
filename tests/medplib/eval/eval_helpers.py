"""Small MeCoVQA-format fixtures written to a tmp folder, masks given as rectangles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def rect(hw: tuple[int, int], *boxes: tuple[int, int, int, int]) -> np.ndarray:
    """Bool (H, W) mask, True inside each half-open (row0, row1, col0, col1) box."""
    m = np.zeros(hw, dtype=bool)
    for r0, r1, c0, c1 in boxes:
        m[r0:r1, c0:c1] = True
    return m


def write_png(root: Path, rel: str, array: np.ndarray) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    Image.fromarray(array).save(path)
    return rel


def write_image(root: Path, stem: str, hw: tuple[int, int], seed: int = 0) -> str:
    rgb = np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)
    return write_png(root, f"images/{stem}.png", rgb)


def grounding(rid: str, image: str, *targets: str, question: str = "Segment the liver.", **extra):
    answer = " and ".join(f"<SEG><mask>{t}</mask>" for t in targets)
    return {
        "id": rid,
        "image": image,
        "conversations": [
            {"from": "human", "value": f"<image>\n{question}"},
            {"from": "gpt", "value": f"Here: {answer}."},
        ],
        **extra,
    }


def vqa(rid: str, image: str, question: str, answer: str, region: str | None = None, **extra):
    q = f"<image>\n{question}"
    if region is not None:
        q = q.replace("<region>", f"<region>{region}</region>")
    return {
        "id": rid,
        "image": image,
        "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": answer}],
        **extra,
    }


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path
