"""Agreement between reviewers, as pure functions on plain labels."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters over the same items; None when undefined (no items).

    When both raters always give one same label, agreement is perfect and kappa is 1.
    """
    if len(a) != len(b):
        raise ValueError("both raters must label the same items")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in ca.keys() | cb.keys()) / (n * n)
    if expected == 1.0:
        return 1.0
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(items: Sequence[Mapping[Hashable, int]]) -> float | None:
    """Fleiss' kappa; each item maps label → number of raters who gave it.

    Items may have different numbers of raters (at least two each; others are ignored).
    """
    rated = [item for item in items if sum(item.values()) >= 2]
    if not rated:
        return None
    per_item = []
    totals: Counter[Hashable] = Counter()
    raters = 0
    for item in rated:
        n = sum(item.values())
        per_item.append((sum(c * c for c in item.values()) - n) / (n * (n - 1)))
        totals.update(item)
        raters += n
    p_bar = sum(per_item) / len(per_item)
    p_e = sum((c / raters) ** 2 for c in totals.values())
    if p_e == 1.0:
        return 1.0
    return (p_bar - p_e) / (1.0 - p_e)


def mask_agreement(
    masks_by_item: Mapping[Hashable, Mapping[str, np.ndarray]],
) -> dict[str, Any]:
    """Pairwise Dice and IoU between reviewers' masks of the same answer.

    ``masks_by_item[item][reviewer]`` is a bool (H, W) mask. Each item with two or more
    reviewers gives one row per reviewer pair; ``overall`` averages the rows and, per pair of
    reviewers, their rows. Two empty masks agree perfectly (Dice and IoU 1).
    """
    rows: list[dict[str, Any]] = []
    for item, by_reviewer in masks_by_item.items():
        names = sorted(by_reviewer)
        for x, y in combinations(names, 2):
            rows.append(
                {
                    "item": item,
                    "reviewers": (x, y),
                    "dice": _dice_or_one(by_reviewer[x], by_reviewer[y]),
                    "iou": _iou_or_one(by_reviewer[x], by_reviewer[y]),
                }
            )
    pairs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        pairs.setdefault(row["reviewers"], []).append(row)
    return {
        "rows": rows,
        "by_pair": {
            pair: {
                "items": len(rs),
                "dice": mean_or_none(r["dice"] for r in rs),
                "iou": mean_or_none(r["iou"] for r in rs),
            }
            for pair, rs in pairs.items()
        },
        "overall": {
            "items": len({r["item"] for r in rows}),
            "pairs": len(rows),
            "dice": mean_or_none(r["dice"] for r in rows),
            "iou": mean_or_none(r["iou"] for r in rows),
        },
    }


def _intersection_union(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int]:
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks of one answer differ in shape: {a.shape} vs {b.shape}")
    return int((a & b).sum()), int((a | b).sum()), int(a.sum() + b.sum())


def _dice_or_one(a: np.ndarray, b: np.ndarray) -> float:
    inter, _, total = _intersection_union(a, b)
    return 1.0 if total == 0 else 2.0 * inter / total


def _iou_or_one(a: np.ndarray, b: np.ndarray) -> float:
    inter, union, _ = _intersection_union(a, b)
    return 1.0 if union == 0 else inter / union


def mean_or_none(values: Iterable[float]) -> float | None:
    """The mean, or None for no values (a table cell with nothing to average)."""
    items = list(values)
    return sum(items) / len(items) if items else None
