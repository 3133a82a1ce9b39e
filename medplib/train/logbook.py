"""Metrics log (one JSON object per line) and the PNG of a stage's loss curves."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

METRICS_NAME = "metrics.jsonl"
CURVES_NAME = "loss_curves.png"
TRAIN_KEYS = ("loss", "ce", "bce", "dice", "focal", "sam", "aux")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by an interruption ends the usable log
    return rows


class MetricsLog:
    """Appends records; on resume, lines after the resumed step are dropped first."""

    def __init__(self, path: Path, *, resume_step: int | None = None) -> None:
        self.path = path
        if resume_step is not None:
            kept = [r for r in read_metrics(path) if int(r.get("step", 0)) <= resume_step]
            path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        elif path.exists():
            path.unlink()

    def write(self, record: dict[str, Any]) -> None:
        clean = {k: _plain(v) for k, v in record.items()}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(clean) + "\n")


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _series(rows: Iterable[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in rows:
        if r.get(key) is not None:
            xs.append(int(r["step"]))
            ys.append(float(r[key]))
    return xs, ys


def plot_curves(metrics_path: Path, png_path: Path, title: str) -> Path:
    """Training losses (left) and validation metrics (right) against the optimizer step."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    train = [r for r in rows if r.get("kind") == "train"]
    val = [r for r in rows if r.get("kind") == "val"]
    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    for key in TRAIN_KEYS:
        xs, ys = _series(train, key)
        if xs:
            ax_train.plot(xs, ys, label=key, linewidth=2 if key == "loss" else 1)
    ax_train.set_xlabel("optimizer step")
    ax_train.set_ylabel("training loss (window mean)")
    ax_train.set_yscale("log")
    ax_train.legend(fontsize=8)
    val_keys = sorted({k for r in val for k in r if k.startswith("val_")})
    ax_dice = ax_val.twinx()  # Dice lives in [0, 1], cross-entropies on their own scale
    ax_dice.set_prop_cycle(
        color=["tab:pink", "tab:olive", "tab:cyan", "tab:gray"]
    )  # colours unlike the CE lines
    for key in val_keys:
        xs, ys = _series(val, key)
        if not xs:
            continue
        is_dice = "dice" in key
        (ax_dice if is_dice else ax_val).plot(
            xs, ys, marker="o", linestyle="--" if is_dice else "-", label=key.removeprefix("val_")
        )
    ax_val.set_xlabel("optimizer step")
    ax_val.set_ylabel("validation cross-entropy (solid)")
    ax_dice.set_ylabel("validation Dice @ 0.5 (dashed)")
    ax_dice.set_ylim(0, 1)
    handles = ax_val.get_legend_handles_labels()[0] + ax_dice.get_legend_handles_labels()[0]
    if handles:
        ax_val.legend(handles=handles, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
