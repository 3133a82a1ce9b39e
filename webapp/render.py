"""Pure rendering helpers: overlays, legends, the routing chart, escaped chat text.

Nothing here touches the database or Gradio; every function maps plain values to plain
values (numpy images, HTML strings, message dicts) so it can be tested on its own.
Every user- or model-supplied string is HTML-escaped before it reaches the page.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from medplib.masks import decode_rle, resize_mask_nearest

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
# Saved regions are outlined in one colour that no mask colour uses (with a dark halo).
SAVED_REGION_RGB = (255, 255, 0)


# What makes Markdown (as Gradio renders it, with GitHub's extensions) more than text:
# brackets (links, images), backticks (code), * _ ~ (emphasis), # (headings), | (tables),
# backslashes (escapes), and bare URLs, www. and e-mail addresses (autolinks). As numeric
# character references they show as themselves but are never syntax.
_MARKDOWN_SYNTAX = "\\`*_[]#|~"
# One pass, so no reference is escaped twice: HTML's five, then the Markdown characters.
_AS_TEXT = {
    **{ord(ch): f"&#{ord(ch)};" for ch in _MARKDOWN_SYNTAX},
    ord("&"): "&amp;",
    ord("<"): "&lt;",
    ord(">"): "&gt;",
    ord('"'): "&quot;",
    ord("'"): "&#x27;",
}
_AUTOLINK = re.compile(r"(://|(?<![\w.-])www\.|@)", re.IGNORECASE)
_AUTOLINK_AS_TEXT = {"://": "&#58;//", "@": "&#64;"}


def escape_html(text: str | None) -> str:
    """HTML-escape text (quotes included) for an HTML component, which renders no Markdown."""
    return html.escape(text or "", quote=True)


def escape_text(text: str | None) -> str:
    """User or model text for a Markdown, HTML or Chatbot component: shown exactly as typed.

    HTML is escaped (quotes included) and Markdown syntax characters become character
    references, so ``![x](http://…)`` is no image, ``[text](https://…)`` and a bare URL no
    link, and ``<b>`` no tag: user text is only ever text.
    """
    escaped = (text or "").translate(_AS_TEXT)
    return _AUTOLINK.sub(
        lambda m: _AUTOLINK_AS_TEXT.get(m.group(0), m.group(0)[:-1] + "&#46;"), escaped
    )


def toast_text(text: str) -> str:
    """A message for Gradio's pop-ups, which render HTML (links and images included): as text."""
    return html.escape(text, quote=False)


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
            f"<b>{escape_html(entry.label)}</b> {escape_html(entry.detail)}</li>"
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
    text = f"Answered by checkpoint <code>{escape_html(checkpoint_id)}</code>"
    if UNTRAINED_MARKER in checkpoint_id.lower():
        text += (
            ' <span class="medplib-untrained" style="background:#b00020;color:white;'
            'padding:0.1em 0.5em;border-radius:0.3em;font-weight:bold">untrained demo model'
            "</span> its answers and masks are not meaningful."
        )
    return f'<div class="medplib-checkpoint">{text}</div>'


# Series of the chart, from the predictor's routing record (`medplib.predictor.RoutingStats`).
ROUTING_SERIES = (
    ("prompt_image_share", "image tokens"),
    ("prompt_text_share", "question tokens"),
    ("answer_share", "answer tokens"),
)


def routing_series(routing: Any) -> dict[str, list[tuple[int, float]]]:
    """Per token kind, ``(decoder layer, share of tokens routed to the grounding expert)``.

    Reads the stored routing record: ``{"layers": [layer index per MoE layer],
    "num_experts": 2, "prompt_image_share": [[grounding, vl], ...], "prompt_text_share":
    [...], "answer_share": [...]}``; a kind without shares is left out. Without two experts
    there is nothing to compare, so no series.
    """
    if not isinstance(routing, dict) or int(routing.get("num_experts") or 0) < 2:
        return {}
    layers = routing.get("layers")
    if not isinstance(layers, list):
        return {}
    series: dict[str, list[tuple[int, float]]] = {}
    for key, name in ROUTING_SERIES:
        shares = routing.get(key)
        if not isinstance(shares, list) or len(shares) != len(layers):
            continue
        points = [
            (int(layer), float(share[0]))
            for layer, share in zip(layers, shares, strict=True)
            if isinstance(share, (list, tuple)) and share
        ]
        if points:
            series[name] = points
    return series


def routing_chart(routing: Any, *, title: str = "") -> np.ndarray | None:
    """A small line chart (RGB array): share of tokens sent to each expert, per layer."""
    series = routing_series(routing)
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(5.5, 3.0), dpi=100)
    ax = fig.add_subplot()
    for name, points in series.items():
        layers = [p[0] for p in points]
        ax.plot(layers, [p[1] for p in points], marker="o", markersize=3, label=name)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set_ylim(0.0, 1.0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("decoder layer", fontsize=8)
    ax.set_ylabel(f"share to {EXPERT_NAMES[0]}", fontsize=8)
    ax.text(1.0, 1.02, f"rest: {EXPERT_NAMES[1]}", transform=ax.transAxes, ha="right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    # Below the axes, never over the lines: shares near 0 or 1 are common.
    ax.legend(
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.32),
        ncol=max(1, len(series)),
        frameon=False,
    )
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


def annotate_regions(
    image: np.ndarray, regions: Sequence[dict[str, Any]], *, original_wh: tuple[int, int]
) -> np.ndarray:
    """A copy of a shown (h, w, 3) image with each region outlined and numbered by its label.

    Regions are geometry documents in original pixels (``original_wh``); they are scaled per
    axis to the shown size. Points get a ring, boxes a rectangle, masks their outline.
    """
    if not regions:
        return image
    height, width = image.shape[:2]
    sx, sy = width / original_wh[0], height / original_wh[1]
    canvas = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    draw = ImageDraw.Draw(canvas)
    ring = max(3.0, 0.015 * max(width, height))
    for number, item in enumerate(regions, start=1):
        label = str(item.get("label", number))
        kind = item.get("kind")
        if kind == "point":
            x, y = item["xy_px"][0] * sx, item["xy_px"][1] * sy
            draw.ellipse((x - ring, y - ring, x + ring, y + ring), outline=(0, 0, 0), width=3)
            draw.ellipse((x - ring, y - ring, x + ring, y + ring), outline=SAVED_REGION_RGB)
            anchor = (x + ring + 1, y - ring)
        elif kind == "box":
            x0, y0, x1, y1 = item["xyxy_px"]
            xy = (min(x0, x1) * sx, min(y0, y1) * sy, max(x0, x1) * sx, max(y0, y1) * sy)
            draw.rectangle(xy, outline=(0, 0, 0), width=3)
            draw.rectangle(xy, outline=SAVED_REGION_RGB)
            anchor = (xy[0] + 2, xy[1] + 1)
        elif kind == "mask":
            mask = resize_mask_nearest(decode_rle(item["rle"]), (height, width))
            edge = _outline(mask)
            pixels = np.asarray(canvas).copy()
            pixels[edge] = SAVED_REGION_RGB
            canvas = Image.fromarray(pixels)
            draw = ImageDraw.Draw(canvas)
            rows, cols = np.nonzero(mask)
            anchor = (float(cols.min()) + 2, float(rows.min()) + 1) if rows.size else (2.0, 2.0)
        else:
            continue
        draw.text(anchor, label, fill=SAVED_REGION_RGB, stroke_width=2, stroke_fill=(0, 0, 0))
    return np.asarray(canvas)
