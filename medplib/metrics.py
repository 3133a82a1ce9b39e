"""Segmentation and text (VQA) metrics as pure functions.

Segmentation metrics take bool masks of equal shape (H, W) at the original image resolution.
Text metrics normalise both strings with `normalize_answer` and compare whitespace tokens.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from statistics import median
from typing import Any

import numpy as np

# Empty-mask rule, shared by `dice` and `iou` (and gIoU).
EMPTY_BOTH_SCORE = 1.0  # nothing to find and nothing predicted: a perfect answer
EMPTY_ONE_SCORE = 0.0  # follows from the formulas: no overlap is possible
EMPTY_MASK_RULE = (
    "Empty masks: when both the prediction and the reference are empty, Dice = IoU = 1; "
    "when exactly one of them is empty, Dice = IoU = 0."
)

_RECORD_KEYS = (
    "dice",
    "iou",
    "intersection",
    "union",
    "pred_area",
    "target_area",
    "modality",
    "source",
)


def _pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    if p.shape != t.shape:
        raise ValueError(f"Prediction shape {p.shape} differs from target shape {t.shape}.")
    return p, t


def intersection_union(pred: np.ndarray, target: np.ndarray) -> tuple[int, int]:
    """Pixel counts ``(|P & T|, |P | T|)``."""
    p, t = _pair(pred, target)
    return int(np.count_nonzero(p & t)), int(np.count_nonzero(p | t))


def iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union ``|P & T| / |P | T|``.

    Empty rule: both masks empty -> 1.0; exactly one empty -> 0.0 (see `EMPTY_MASK_RULE`).
    """
    inter, union = intersection_union(pred, target)
    return EMPTY_BOTH_SCORE if union == 0 else inter / union


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice coefficient ``2 |P & T| / (|P| + |T|)``.

    Empty rule: both masks empty -> 1.0; exactly one empty -> 0.0 (see `EMPTY_MASK_RULE`).
    """
    p, t = _pair(pred, target)
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    if total == 0:
        return EMPTY_BOTH_SCORE
    return 2 * int(np.count_nonzero(p & t)) / total


def segmentation_record(
    pred: np.ndarray, target: np.ndarray, *, modality: str, source: str
) -> dict[str, Any]:
    """One sample's record for `aggregate_segmentation`."""
    p, t = _pair(pred, target)
    inter, union = intersection_union(p, t)
    return {
        "dice": dice(p, t),
        "iou": iou(p, t),
        "intersection": inter,
        "union": union,
        "pred_area": int(np.count_nonzero(p)),
        "target_area": int(np.count_nonzero(t)),
        "modality": modality,
        "source": source,
    }


def _summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    dices = [float(r["dice"]) for r in records]
    ious = [float(r["iou"]) for r in records]
    inter = sum(int(r["intersection"]) for r in records)
    union = sum(int(r["union"]) for r in records)
    areas = sum(int(r["pred_area"]) + int(r["target_area"]) for r in records)
    g_ious = [
        EMPTY_BOTH_SCORE if int(r["union"]) == 0 else int(r["intersection"]) / int(r["union"])
        for r in records
    ]
    return {
        "count": len(records),
        "mDice": sum(dices) / len(dices),
        "mIoU": sum(ious) / len(ious),
        "median_dice": float(median(dices)),
        "median_iou": float(median(ious)),
        "cDice": EMPTY_BOTH_SCORE if areas == 0 else 2 * inter / areas,
        "cIoU": EMPTY_BOTH_SCORE if union == 0 else inter / union,
        "gIoU": sum(g_ious) / len(g_ious),
    }


def _grouped(records: Sequence[Mapping[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        groups.setdefault(str(record[key]), []).append(record)
    return {name: _summary(group) for name, group in sorted(groups.items())}


def aggregate_segmentation(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Dataset-level segmentation metrics from per-sample records (`segmentation_record`).

    Returns
    - ``count``; ``mDice``/``mIoU``: micro means over samples (what MedPLIB's script prints);
    - ``macro_mDice``/``macro_mIoU``: mean over modalities of the per-modality means (the
      paper's "overall" number);
    - ``median_dice``/``median_iou``;
    - ``cDice = 2 sum(I) / (sum(P) + sum(T))`` and ``cIoU = sum(I) / sum(U)`` (cumulative,
      dominated by large masks);
    - ``gIoU``: LISA-style mean of per-sample ``I / U`` recomputed from the counts, an empty
      union counting 1 (equal to ``mIoU`` when records come from `segmentation_record`);
    - ``per_modality`` and ``per_source``: the same summary (with ``count``) per group;
    - ``empty_mask_rule``: `EMPTY_MASK_RULE`.
    """
    items = list(records)
    if not items:
        raise ValueError("No segmentation records to aggregate.")
    for position, record in enumerate(items):
        missing = [k for k in _RECORD_KEYS if k not in record]
        if missing:
            raise ValueError(f"Record {position} lacks {', '.join(missing)}.")
    result = _summary(items)
    per_modality = _grouped(items, "modality")
    result["macro_mDice"] = sum(m["mDice"] for m in per_modality.values()) / len(per_modality)
    result["macro_mIoU"] = sum(m["mIoU"] for m in per_modality.values()) / len(per_modality)
    result["per_modality"] = per_modality
    result["per_source"] = _grouped(items, "source")
    result["empty_mask_rule"] = EMPTY_MASK_RULE
    return result


# Text metrics.

_NUMBER_WORDS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "thirteen": "13",
    "fourteen": "14",
    "fifteen": "15",
    "sixteen": "16",
    "seventeen": "17",
    "eighteen": "18",
    "nineteen": "19",
    "twenty": "20",
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "sixty": "60",
    "seventy": "70",
    "eighty": "80",
    "ninety": "90",
}
_ARTICLES = {"a", "an", "the"}
# Whole-word contractions (with or without the apostrophe, as typed in answers).
_CONTRACTIONS = {
    "isn't": "is not",
    "aren't": "are not",
    "wasn't": "was not",
    "weren't": "were not",
    "don't": "do not",
    "doesn't": "does not",
    "didn't": "did not",
    "can't": "cannot",
    "couldn't": "could not",
    "shouldn't": "should not",
    "wouldn't": "would not",
    "won't": "will not",
    "hasn't": "has not",
    "haven't": "have not",
    "hadn't": "had not",
    "mustn't": "must not",
    "it's": "it is",
    "that's": "that is",
    "there's": "there is",
    "what's": "what is",
    "here's": "here is",
    "let's": "let us",
    "i'm": "i am",
    "you're": "you are",
    "we're": "we are",
    "they're": "they are",
    "i've": "i have",
    "you've": "you have",
    "we've": "we have",
    "they've": "they have",
    "i'll": "i will",
    "you'll": "you will",
    "it'll": "it will",
    "they'll": "they will",
    "i'd": "i would",
    "you'd": "you would",
    "they'd": "they would",
}
_CONTRACTIONS.update({k.replace("'", ""): v for k, v in _CONTRACTIONS.items() if k.endswith("n't")})
_CONTRACTION_RE = re.compile(
    r"(?<![\w'])("
    + "|".join(re.escape(k) for k in sorted(_CONTRACTIONS, key=len, reverse=True))
    + r")(?![\w'])"
)
_THOUSANDS_COMMA_RE = re.compile(r"(?<=\d),(?=\d)")
# Any punctuation except a point with a digit on both sides (a decimal point).
_PUNCTUATION_RE = re.compile(r"(?<!\d)\.|\.(?!\d)|[^\w\s.]|_")


def normalize_answer(text: str) -> str:
    """LLaVA-Med-style answer normalisation.

    Lower-case; expand contractions ("isn't" -> "is not", also typed without the apostrophe);
    drop apostrophes ("patient's" -> "patients"); replace other punctuation by spaces, except a
    point or comma between two digits (kept as a decimal point, dropped as a thousands comma:
    "3.5" stays, "1,000" -> "1000"); map number words zero..twenty and the tens to digits;
    remove the articles a, an, the; collapse whitespace.
    """
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    text = _CONTRACTION_RE.sub(lambda m: _CONTRACTIONS[m.group(1)], text)
    text = text.replace("'", "")
    text = _THOUSANDS_COMMA_RE.sub("", text)
    text = _PUNCTUATION_RE.sub(" ", text)
    words = [_NUMBER_WORDS.get(w, w) for w in text.split()]
    return " ".join(w for w in words if w not in _ARTICLES)


def _tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


def exact_match(pred: str, ref: str) -> float:
    """1.0 when the normalised prediction equals the normalised reference, else 0.0."""
    return 1.0 if normalize_answer(pred) == normalize_answer(ref) else 0.0


def first_structure(text: str, names: Sequence[str]) -> str | None:
    """The name in `names` that `text` mentions first (the longest one at the same place).

    How an open answer about a region is judged: "This area shows the left lung, near the
    heart." names the left lung, whatever else it says.
    """
    norm = f" {normalize_answer(text)} "
    best: tuple[int, int, str] | None = None
    for name in names:
        pos = norm.find(f" {normalize_answer(name)} ")
        if pos >= 0 and (best is None or (pos, -len(name)) < (best[0], best[1])):
            best = (pos, -len(name), name)
    return best[2] if best else None


def closed_accuracy(pred: str, ref: str) -> float:
    """Accuracy for closed questions.

    1.0 when the normalised strings are equal. For a yes/no reference, a prediction whose first
    normalised word is "yes" or "no" is judged by that word ("Yes, the liver is enlarged." is
    correct for "yes").
    """
    p, r = normalize_answer(pred), normalize_answer(ref)
    if p == r:
        return 1.0
    if r in ("yes", "no"):
        first = p.split()[0] if p else ""
        return 1.0 if first == r else 0.0
    return 0.0


def token_f1(pred: str, ref: str) -> dict[str, float]:
    """Bag-of-tokens precision, recall and F1 (both empty -> 1.0; one empty -> 0.0)."""
    p, r = _tokens(pred), _tokens(ref)
    if not p and not r:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    precision, recall = common / len(p), common / len(r)
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall),
    }


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu(pred: str, ref: str, max_n: int = 4, *, smooth: bool = True) -> dict[str, float]:
    """Sentence-level BLEU against one reference.

    Returns ``bleu_1`` .. ``bleu_{max_n}`` (cumulative: brevity penalty times the geometric mean
    of the modified n-gram precisions 1..n), ``precision_1`` .. (the modified precisions
    ``p_n`` before smoothing) and ``brevity_penalty`` = 1 if the prediction is longer than the
    reference, else ``exp(1 - ref_len / pred_len)``.

    Smoothing (``smooth=True``, the default): add-one for n > 1 (Lin & Och, 2004),
    ``p_n = (matches + 1) / (total + 1)``, so a short but correct answer is not scored 0 just
    because it has no 4-grams (a one-word exact answer scores 1.0). ``p_1`` is never smoothed,
    so an answer with no word in common with the reference still scores 0.
    ``smooth=False`` is standard unsmoothed BLEU (any zero ``p_n`` makes BLEU-n 0).
    An empty prediction scores 0 (1.0 if the reference is empty too).
    """
    if max_n < 1:
        raise ValueError(f"max_n must be at least 1; got {max_n}.")
    p, r = _tokens(pred), _tokens(ref)
    result: dict[str, float] = {}
    if not p:
        score = 1.0 if not r else 0.0
        for n in range(1, max_n + 1):
            result[f"bleu_{n}"] = score
            result[f"precision_{n}"] = score
        result["brevity_penalty"] = score
        return result
    brevity = 1.0 if len(p) > len(r) else math.exp(1 - len(r) / len(p))
    log_sum = 0.0
    for n in range(1, max_n + 1):
        pred_ngrams, ref_ngrams = _ngrams(p, n), _ngrams(r, n)
        total = sum(pred_ngrams.values())
        matches = sum((pred_ngrams & ref_ngrams).values())
        result[f"precision_{n}"] = matches / total if total else 0.0
        if smooth and n > 1:
            precision = (matches + 1) / (total + 1)
        else:
            precision = matches / total if total else 0.0
        if precision == 0.0 or log_sum == -math.inf:
            log_sum = -math.inf
            result[f"bleu_{n}"] = 0.0
        else:
            log_sum += math.log(precision)
            result[f"bleu_{n}"] = brevity * math.exp(log_sum / n)
    result["brevity_penalty"] = brevity
    return result


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(pred: str, ref: str) -> dict[str, float]:
    """ROUGE-L from the longest common token subsequence: precision = LCS / len(pred), recall =
    LCS / len(ref), F1 their harmonic mean (both empty -> 1.0; one empty -> 0.0)."""
    p, r = _tokens(pred), _tokens(ref)
    if not p and not r:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    lcs = _lcs_length(p, r)
    if lcs == 0:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    precision, recall = lcs / len(p), lcs / len(r)
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall),
    }


# ----------------------------------------------------------------------------- uncertainty
def _image_means(
    values: Sequence[float], images: Sequence[str], draws: int, rng: np.random.Generator
) -> np.ndarray:
    """(draws,) means of `values` over images drawn with replacement, each with all its values."""
    index: dict[str, int] = {}
    group = np.array([index.setdefault(name, len(index)) for name in images])
    sums = np.bincount(group, weights=np.asarray(values, dtype=float))  # (G,)
    counts = np.bincount(group).astype(float)  # (G,)
    picks = rng.integers(0, len(counts), size=(draws, len(counts)))  # (R, G)
    return sums[picks].sum(axis=1) / counts[picks].sum(axis=1)


def _interval(means: np.ndarray, level: float) -> tuple[float, float]:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def image_bootstrap_ci(
    values: Sequence[float],
    images: Sequence[str],
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of `values`, resampling whole images.

    Masks of one image are not independent (one bad image spoils all of its questions), so
    images are drawn with replacement and each brings all of its values; the interval is then
    as wide as the number of images, not of masks, warrants. None for no values; a single image
    gives a zero-width interval, which says nothing about the spread: read it with its n.
    """
    return mean_of_groups_ci({"all": (values, images)}, resamples=resamples, level=level, seed=seed)


def mean_of_groups_ci(
    groups: Mapping[str, tuple[Sequence[float], Sequence[str]]],
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Bootstrap interval of the unweighted mean of per-group means (e.g. the mean over
    sources), each group resampled by image on its own. `groups`: name → (values, images);
    empty groups are left out, None when all are."""
    for values, images in groups.values():
        if len(values) != len(images):
            raise ValueError(f"{len(values)} values for {len(images)} image names")
    kept = {name: g for name, g in sorted(groups.items()) if len(g[0])}
    if not kept:
        return None
    rng = np.random.default_rng(seed)
    means = [_image_means(values, images, resamples, rng) for values, images in kept.values()]
    return _interval(np.mean(means, axis=0), level)
