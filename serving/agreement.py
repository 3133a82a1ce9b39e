"""Agreement between reviewers, as pure functions on plain labels."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence


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
