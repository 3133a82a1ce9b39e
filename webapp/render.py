"""Pure rendering helpers: overlays, legends, the routing chart, escaped chat text.

Nothing here touches the database or Gradio; every function maps plain values to plain
values (numpy images, HTML strings, message dicts) so it can be tested on its own.
Every user- or model-supplied string is HTML-escaped before it reaches the page.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
)
# Expert 0 is the grounding ("Seg") expert, expert 1 the vision-language expert.
EXPERT_NAMES = ("grounding expert", "VL expert")
UNTRAINED_MARKER = "untrained"


def escape_text(text: str | None) -> str:
    """HTML-escape user or model text (quotes included), so it can only ever show as text."""
    return html.escape(text or "", quote=True)


def mask_color(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask with a 4-neighbour outside it (image borders count as outside)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def overlay_masks(
    image: np.ndarray, masks: Sequence[np.ndarray], *, opacity: float = 0.5
) -> np.ndarray:
    """Blend each mask onto an RGB image in its palette colour; outlines stay fully opaque.

    ``image`` is (H, W, 3) uint8 and every mask a bool (H, W) of the same size. Masks are
    painted in order, so a later mask is on top where two overlap. ``opacity`` 0 leaves only
    the outlines, so a mask never disappears from view.
    """
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    alpha = float(min(max(opacity, 0.0), 1.0))
    out = image.astype(np.float32)  # (H, W, 3)
    for index, mask in enumerate(masks):
        region = np.asarray(mask, dtype=bool)
        if region.shape != image.shape[:2]:
            raise ValueError(f"mask {index + 1} is {region.shape}, the image {image.shape[:2]}")
        colour = np.asarray(mask_color(index), dtype=np.float32)
        out[region] = out[region] * (1.0 - alpha) + colour * alpha
        out[_outline(region)] = colour
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class LegendEntry:
    label: str  # e.g. "mask 1"
    detail: str  # e.g. "1,234 px, score 0.91"


def legend_html(entries: Sequence[LegendEntry]) -> str:
    """A colour key for `overlay_masks`, entry i in palette colour i; text is escaped."""
    if not entries:
        return ""
    items = []
    for index, entry in enumerate(entries):
        r, g, b = mask_color(index)
        items.append(
            '<li><span class="medplib-swatch" style="display:inline-block;width:0.9em;'
            f'height:0.9em;background:rgb({r},{g},{b});margin-right:0.4em"></span>'
            f"<b>{escape_text(entry.label)}</b> {escape_text(entry.detail)}</li>"
        )
    return (
        '<ul class="medplib-legend" style="list-style:none;padding:0">' + "".join(items) + "</ul>"
    )


@dataclass(frozen=True)
class ChatTurn:
    question: str  # as displayed (region tags already written as labels)
    answer: str | None
    status: str | None = None  # shown instead of an answer while pending or after failure


def chat_messages(turns: Sequence[ChatTurn]) -> list[dict[str, str]]:
    """Messages for ``gr.Chatbot(type="messages")``; all text escaped."""
    messages: list[dict[str, str]] = []
    for turn in turns:
        messages.append({"role": "user", "content": escape_text(turn.question)})
        if turn.answer is not None:
            messages.append({"role": "assistant", "content": escape_text(turn.answer)})
        elif turn.status:
            messages.append({"role": "assistant", "content": f"*{escape_text(turn.status)}*"})
    return messages


def job_status_text(
    status: str,
    *,
    position: int | None,
    phase: str | None,
    progress: float,
    error: str | None = None,
) -> str:
    """One line for a job: ``queued (position 2)``, ``running: decoding (45 %)``, ..."""
    if status == "queued":
        return f"queued (position {position})" if position else "queued"
    if status == "running":
        return f"running: {phase or 'starting'} ({round(progress * 100)} %)"
    if status == "succeeded":
        return "answered"
    if status == "cancelled":
        return "cancelled"
    return f"failed: {error}" if error else "failed"


def checkpoint_badge_html(checkpoint_id: str | None) -> str:
    """Which model answered; an untrained demo model gets a warning badge."""
    if not checkpoint_id:
        return ""
    text = f"Answered by checkpoint <code>{escape_text(checkpoint_id)}</code>"
    if UNTRAINED_MARKER in checkpoint_id.lower():
        text += (
            ' <span class="medplib-untrained" style="background:#b00020;color:white;'
            'padding:0.1em 0.5em;border-radius:0.3em;font-weight:bold">untrained demo model'
            "</span> its answers and masks are not meaningful."
        )
    return f'<div class="medplib-checkpoint">{text}</div>'


def routing_series(routing: Any) -> dict[str, list[tuple[int, float]]]:
    """Per token kind, ``(layer, share of tokens routed to the grounding expert)``.

    Accepts ``{"layers": [{"layer": i, "expert_share": [g, vl], "text_share": [...],
    "image_share": [...]}, ...]}`` (shares per expert, summing to 1; the per-kind keys are
    optional) or ``{"expert_share": [[g, vl], ...]}`` (one pair per layer). Anything else
    gives no series.
    """
    series: dict[str, list[tuple[int, float]]] = {}
    if not isinstance(routing, dict):
        return series
    layers = routing.get("layers")
    if isinstance(layers, list):
        for position, layer in enumerate(layers):
            if not isinstance(layer, dict):
                continue
            index = int(layer.get("layer", position))
            for key, name in (
                ("expert_share", "all tokens"),
                ("text_share", "text tokens"),
                ("image_share", "image tokens"),
            ):
                share = layer.get(key)
                if isinstance(share, (list, tuple)) and share:
                    series.setdefault(name, []).append((index, float(share[0])))
        return series
    shares = routing.get("expert_share")
    if isinstance(shares, list):
        for index, share in enumerate(shares):
            if isinstance(share, (list, tuple)) and share:
                series.setdefault("all tokens", []).append((index, float(share[0])))
    return series


def routing_chart(routing: Any, *, title: str = "") -> np.ndarray | None:
    """A small line chart (RGB array): share of tokens sent to each expert, per layer."""
    series = routing_series(routing)
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 2.4), dpi=100)
    ax = fig.add_subplot()
    for name, points in series.items():
        layers = [p[0] for p in points]
        ax.plot(layers, [p[1] for p in points], marker="o", markersize=3, label=name)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("decoder layer")
    ax.set_ylabel(f"share to {EXPERT_NAMES[0]}")
    ax.text(1.0, 1.02, f"rest: {EXPERT_NAMES[1]}", transform=ax.transAxes, ha="right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    with Image.open(io.BytesIO(buffer.getvalue())) as png:
        return np.asarray(png.convert("RGB"))


def region_list_markdown(lines: Sequence[str], notes: Sequence[str] = ()) -> str:
    """The "Regions" panel: one escaped line per region, then notes in italics."""
    if not lines and not notes:
        return "No regions drawn. Click or drag on the image, or sketch on the second canvas."
    body = "\n".join(f"- {escape_text(line)}" for line in lines)
    tail = "\n".join(f"\n*{escape_text(note)}*" for note in notes)
    hint = "\n\nRefer to them as `region 1`, `region 2` or `<region>` in the question."
    return (body + tail + (hint if lines else "")).strip()
