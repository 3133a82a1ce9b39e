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


def write_scored_split(
    tmp_path: Path, split: str, target: np.ndarray, answers: dict[str, tuple[str, dict]]
) -> tuple[Path, Path]:
    """What `python -m medplib.eval.corpus` leaves for one split's grounding file, made from
    given answers: (corpus, eval folder).

    Each answer gets its own CT image whose reference is `target`; `answers` maps an id to
    (source, its predictions line without the id).
    """
    from medplib.eval.evaluator import evaluate_predictions, write_report

    corpus, out = tmp_path / "corpus", tmp_path / "eval"
    reference = write_png(corpus, "masks/t.png", target)
    records = [
        grounding(rid, write_image(corpus, f"ct_{k:02d}--{source}--{rid}--2d", target.shape, k),
                  reference, source=source, modality="ct")
        for k, (rid, (source, _)) in enumerate(answers.items())
    ]  # fmt: skip
    (corpus / "grounding").mkdir()
    data = write_json(corpus / "grounding" / f"{split}.json", records)
    out.mkdir()
    lines = [{"id": rid, **line} for rid, (_, line) in answers.items()]
    predictions = write_jsonl(out / f"{split}-grounding.predictions.jsonl", lines)
    result = evaluate_predictions(predictions, data, corpus)
    write_report(result, out / f"{split}-grounding.json", predictions_path=predictions)
    return corpus, out
