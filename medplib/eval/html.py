"""Self-contained HTML report: metric tables and best / worst grounding overlays per modality.

Every value from the data (ids, questions, answers, file names) is HTML-escaped; images are
embedded as base64 PNG, so the file opens anywhere without its inputs.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3}
.bar{display:inline-block;height:.8em;background:#3a7bd5;vertical-align:middle}
.cases{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0;width:200px;font-size:.8em}
figure img{image-rendering:pixelated;border:1px solid #999}
.muted{color:#777}
"""
_SEG_COLUMNS = (
    ("count", "n"),
    ("mDice", "mDice"),
    ("mIoU", "mIoU"),
    ("median_dice", "median Dice"),
    ("cDice", "cDice"),
    ("cIoU", "cIoU"),
    ("gIoU", "gIoU"),
    ("no_seg_count", "no <SEG>"),
)
_TEXT_COLUMNS = (
    ("count", "n"),
    ("closed_count", "closed"),
    ("closed_accuracy", "closed acc."),
    ("exact_match", "exact match"),
    ("token_f1", "token F1"),
    ("bleu_1", "BLEU-1"),
    ("bleu_4", "BLEU-4"),
    ("rouge_l", "ROUGE-L"),
)


@dataclass(frozen=True)
class Overlay:
    """One grounding case to show: image with target contour and prediction fill."""

    modality: str
    kind: str  # "best" or "worst"
    id: str
    question: str
    answer: str
    dice: float
    image_uri: str  # data:image/png;base64,...
    # Per mask, when the run recorded them: the model's score and mirror agreement.
    mask_scores: tuple[float | None, ...] = ()
    mirror_agreement: tuple[float | None, ...] = ()


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return '<span class="muted">–</span>'
    if isinstance(value, float):
        return f"{value:.4f}"
    return _e(value)


def _table(
    rows: Mapping[str, Mapping[str, Any]], columns: Sequence[tuple[str, str]], first: str, bar=None
) -> str:
    head = "".join(f"<th>{_e(title)}</th>" for _, title in columns)
    extra = "<th></th>" if bar else ""
    out = [f"<table><tr><th>{_e(first)}</th>{head}{extra}</tr>"]
    for name, row in rows.items():
        cells = "".join(f"<td>{_fmt(row.get(key))}</td>" for key, _ in columns)
        if bar:
            value = row.get(bar)
            width = int(round(160 * max(0.0, min(1.0, float(value))))) if value is not None else 0
            cells += f'<td><span class="bar" style="width:{width}px"></span></td>'
        out.append(f"<tr><td>{_e(name)}</td>{cells}</tr>")
    out.append("</table>")
    return "".join(out)


def _kv(pairs: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in pairs.items())
    return f"<table>{rows}</table>"


def _grounding(g: Mapping[str, Any]) -> str:
    parts = ["<h2>Grounding</h2>"]
    blocks = {f"threshold {g['threshold']}": g}
    blocks.update({f"threshold {k}": v for k, v in g.get("by_threshold", {}).items()})
    overall_cols = (*_SEG_COLUMNS[:2], ("macro_mDice", "macro mDice"), *_SEG_COLUMNS[2:])
    parts.append(_table(blocks, (*overall_cols, ("no_seg_rate", "no <SEG> rate")), "block"))
    parts.append("<ul>" + "".join(f"<li>{_e(rule)}</li>" for rule in g.get("rules", [])) + "</ul>")
    parts.append(f"<h3>Per modality (threshold {_e(g['threshold'])})</h3>")
    parts.append(_table(g["per_modality"], _SEG_COLUMNS, "modality", bar="mDice"))
    parts.append("<h3>Per source</h3>")
    parts.append(_table(g["per_source"], _SEG_COLUMNS[:-1], "source", bar="mDice"))
    q = g.get("question_ignoring", {})
    parts.append("<h3>Question-ignoring check</h3>")
    parts.append(f"<p>{_e(q.get('note', ''))}</p>")
    if q.get("count"):
        cols = (
            ("count", "n"),
            ("mDice_own_target", "Dice, own target"),
            ("mDice_other_target", "Dice, other target"),
            ("gap", "gap"),
        )
        rows = {"all": q, **q.get("per_modality", {})}
        parts.append(_table(rows, cols, "modality"))
    else:
        parts.append('<p class="muted">No image has a second annotated target.</p>')
    return "".join(parts)


def _text(t: Mapping[str, Any]) -> str:
    parts = ["<h2>VQA and region VQA</h2>"]
    parts.append(_table({"all": t["overall"]}, _TEXT_COLUMNS, ""))
    for key, title in (
        ("per_task", "task"),
        ("per_answer_kind", "answer kind"),
        ("per_question_kind", "question kind"),
        ("per_modality", "modality"),
        ("per_source", "source"),
    ):
        if not t.get(key):  # question kinds only where the data names them
            continue
        parts.append(f"<h3>Per {title}</h3>")
        parts.append(_table(t[key], _TEXT_COLUMNS, title))
    return "".join(parts)


def mask_signals_text(overlay: Overlay) -> str:
    """ "score 0.91, mirror agreement 0.95" per mask (masks joined by "; "); "" when none."""
    count = max(len(overlay.mask_scores), len(overlay.mirror_agreement))
    per_mask = []
    for i in range(count):
        parts = []
        score = overlay.mask_scores[i] if i < len(overlay.mask_scores) else None
        agreement = overlay.mirror_agreement[i] if i < len(overlay.mirror_agreement) else None
        if score is not None:
            parts.append(f"score {score:.2f}")
        if agreement is not None:
            parts.append(f"mirror agreement {agreement:.2f}")
        if parts:
            per_mask.append(", ".join(parts))
    return "; ".join(per_mask)


def _cases(overlays: Sequence[Overlay]) -> str:
    if not overlays:
        return ""
    parts = [
        "<h2>Best and worst grounding cases</h2>",
        "<p>Green outline: reference mask. Orange fill: predicted mask (union).</p>",
    ]
    modalities = list(dict.fromkeys(o.modality for o in overlays))
    for modality in modalities:
        parts.append(f"<h3>{_e(modality)}</h3><div class='cases'>")
        for o in (o for o in overlays if o.modality == modality):
            signals = mask_signals_text(o)
            parts.append(
                f'<figure><img src="{_e(o.image_uri)}" alt="{_e(o.id)}" width="192">'
                f"<figcaption><b>{_e(o.kind)}</b> · Dice {o.dice:.3f}<br>{_e(o.id)}<br>"
                + (f"Model: {_e(signals)}<br>" if signals else "")
                + f"Q: {_e(o.question)}<br>A: {_e(o.answer)}</figcaption></figure>"
            )
        parts.append("</div>")
    return "".join(parts)


def render_html(
    report: Mapping[str, Any], overlays: Sequence[Overlay] = (), *, max_problems: int = 200
) -> str:
    """The report as one HTML page (no external resources)."""
    inputs = report.get("inputs", {})
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>MedPLIB evaluation: {_e(inputs.get('data', ''))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>MedPLIB evaluation</h1>",
        _kv({**inputs, **report.get("counts", {})}),
    ]
    thresholds = report.get("thresholds", {})
    parts.append(f"<p>Thresholds: {_e(thresholds.get('description', ''))}</p>")
    if report.get("grounding"):
        parts.append(_grounding(report["grounding"]))
    if report.get("text"):
        parts.append(_text(report["text"]))
    parts.append(_cases(overlays))
    notes = [*thresholds.get("notes", []), *report.get("notes", [])]
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    problems = report.get("problems", [])
    if problems:
        parts.append(f"<h2>Problems ({len(problems)})</h2><ul>")
        for p in problems[:max_problems]:
            parts.append(
                f"<li>{_e(p['stage'])} #{_e(p['index'])} (id {_e(p['id'])}): {_e(p['reason'])}</li>"
            )
        if len(problems) > max_problems:
            parts.append(f"<li>… {len(problems) - max_problems} more in the JSON report</li>")
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
