"""The main screen's values for a session: canvases, chat, and one answer's details.

Every function returns ``{output name: value}``; the UI maps names to components.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import gradio as gr
import numpy as np

from medplib.masks import decode_rle, resize_mask_nearest
from serving.views import ImageData, MaskData, SessionData, TurnData
from webapp import render
from webapp.handlers.common import Web, empty_view
from webapp.regions import describe_region, question_for_display
from webapp.state import ViewState

# A turn whose job is in one of these still owes its answer.
LIVE_JOB_STATES = ("queued", "running")

NO_SESSION_CHAT: list[dict[str, str]] = []


# Canvases are emptied first and filled by a follow-up event: the prompter keeps its drawn
# prompts across an image change unless its drawing layer is rebuilt (value None, then image).
EMPTY_CANVASES: dict[str, Any] = {"prompter": None, "editor": None}


def canvas_values(web: Web, view: ViewState) -> dict[str, Any]:
    """Both canvases for the view's image, saved regions burnt in, no prompts on them."""
    display_key = view.get("display_key")
    if not display_key:
        return dict(EMPTY_CANVASES)
    shown = web.shown_image(display_key, view["width_px"], view["height_px"])
    original_wh = (view["width_px"], view["height_px"])
    saved = view.get("saved") or []
    annotated = render.annotate_regions(shown, saved, original_wh=original_wh)
    return {
        # New prompts are numbered on the canvas after the saved regions burnt into the image.
        "prompter": gr.update(value={"image": annotated, "points": []}, first_label=len(saved) + 1),
        "editor": {"background": annotated, "layers": [], "composite": None},
    }


def view_for_image(
    web: Web,
    image: ImageData,
    *,
    session_id: str | None = None,
    read_only: bool = False,
    can_fork: bool = False,
    saved: list[dict[str, Any]] | None = None,
) -> ViewState:
    shown_w, shown_h = web.shown_size(image.width_px, image.height_px)
    view = empty_view()
    view.update(
        {
            "image_id": image.id,
            "display_key": image.display_key,
            "width_px": image.width_px,
            "height_px": image.height_px,
            "shown_w": shown_w,
            "shown_h": shown_h,
            "filename": image.filename,
            "session_id": session_id,
            "read_only": read_only,
            "can_fork": can_fork,
            "saved": saved or [],
        }
    )
    return view


def image_info(image: ImageData) -> str:
    name = render.escape_text(image.filename or "image")
    text = f"**{name}** — {image.width_px}×{image.height_px} px, {image.source_format.upper()}"
    if image.notes:
        text += "  \n" + "; ".join(render.escape_text(n) for n in image.notes)
    return text


def chat_for(session: SessionData, pending: dict[str, str] | None = None) -> list[dict[str, str]]:
    turns = []
    for turn in session.turns:
        status = None
        if turn.answer is None:
            status = render.job_status_text(
                turn.job_status or "queued",
                position=None,
                phase=None,
                progress=0.0,
                error=turn.job_error,
            )
        turns.append(
            render.ChatTurn(
                question=question_for_display(turn.question, turn.regions),
                answer=turn.answer_with_marks,
                status=status,
            )
        )
    return render.chat_messages(turns)


def turn_choices(session: SessionData) -> list[tuple[str, int]]:
    choices = []
    for turn in session.turns:
        if turn.answer is None:
            continue
        question = question_for_display(turn.question, turn.regions)
        short = question if len(question) <= 50 else question[:49] + "…"
        choices.append((f"Answer {turn.index + 1}: {short}", turn.index))
    return choices


def region_lines(regions: list[dict[str, Any]], saved: int = 0) -> list[str]:
    """One line per region; the first ``saved`` are the session's saved regions."""
    return [
        describe_region(item, i + 1) + (" (saved)" if i < saved else "")
        for i, item in enumerate(regions)
    ]


def session_screen(
    web: Web, session: SessionData, *, message: str = "", canvases: bool = True
) -> dict[str, Any]:
    """Everything the main screen shows for a session, the newest answer selected.

    ``canvases=False`` leaves the drawings alone (after an answer the user keeps drawing).
    """
    image = session.image
    shown = web.shown_image(image.display_key, image.width_px, image.height_px)
    restored = session.regions or (session.turns[-1].regions if session.turns else [])
    view = view_for_image(
        web,
        image,
        session_id=session.id,
        read_only=session.read_only,
        can_fork=session.can_fork,
        saved=restored,
    )
    choices = turn_choices(session)
    selected = choices[-1][1] if choices else None
    live = session.turns[-1] if session.turns else None
    if live is not None and live.job_status in LIVE_JOB_STATES:
        view["job_id"] = live.job_id  # `chat.follow` picks it up and polls it to the end
    out: dict[str, Any] = {
        "view": view,
        "image_info": image_info(image),
        "chat": chat_for(session),
        "turn_pick": gr.update(choices=choices, value=selected),
        "status": message,
        "banner": banner_text(session),
        "fork_btn": gr.update(visible=session.can_fork),
        "ask_btn": gr.update(interactive=not session.read_only and not view["job_id"]),
        "question": gr.update(interactive=not session.read_only),
    }
    if canvases:
        out.update(EMPTY_CANVASES, sketches=[])
        out["regions_md"] = render.region_list_markdown(region_lines(restored, len(restored)))
        out["drawn"] = restored
    turn = next((t for t in session.turns if t.index == selected), None)
    out.update(turn_details(web, session, turn, opacity=0.5, shown=shown))
    return out


def banner_text(session: SessionData) -> str:
    if not session.read_only:
        return ""
    if session.can_fork:
        return (
            f"**Read-only view** of the shared session “{render.escape_text(session.title)}”. "
            "Press **Fork** to get your own copy and continue the conversation."
        )
    return (
        f"**Read-only view** of “{render.escape_text(session.title)}”: this link allows "
        "viewing only."
    )


def blank_details() -> dict[str, Any]:
    return {"overlay": None, "legend": "", "badge": "", "routing": None, "downloads": None}


def turn_details(
    web: Web,
    session: SessionData,
    turn: TurnData | None,
    *,
    opacity: float,
    shown: np.ndarray | None = None,
) -> dict[str, Any]:
    """Overlay, legend, checkpoint badge, routing chart and download files for one answer."""
    if turn is None or turn.answer is None:
        return blank_details()
    image = session.image
    if shown is None:
        shown = web.shown_image(image.display_key, image.width_px, image.height_px)
    size_hw = (shown.shape[0], shown.shape[1])
    masks = [resize_mask_nearest(decode_rle(m.rle), size_hw) for m in turn.masks]
    legend = masks_legend(turn.masks)
    if turn.warnings:
        legend += "".join(f"<p>⚠ {render.escape_text(w)}</p>" for w in turn.warnings)
    return {
        "overlay": render.overlay_masks(shown, masks, opacity=opacity),
        "legend": legend,
        "badge": render.checkpoint_badge_html(turn.checkpoint_id),
        "routing": render.routing_chart(turn.routing, title=f"Answer {turn.index + 1}"),
        "downloads": mask_downloads(web, session, turn) or None,
    }


# Read beside a legend line such as "mirror agreement 0.00", which alone looks like a failure.
MIRROR_NOTE = (
    "Mirror agreement: Dice between the mask and the one the model finds on the image flipped "
    "left to right (1 = the same). The two are averaged only when they agree. A structure "
    "named by its side (the left lung) or lying on one side (the liver, the heart) changes "
    "side in the mirror, so its mask can be right with a low agreement."
)


def masks_legend(masks: Sequence[MaskData]) -> str:
    """The colour key of an answer's masks, with what the mirror number means when one is shown."""
    if not masks:
        return "<p>No mask for this answer: the model did not ask for one (no &lt;SEG&gt;).</p>"
    entries = [
        render.LegendEntry(label=f"mask {m.index + 1}", detail=mask_detail(m)) for m in masks
    ]
    legend = render.legend_html(entries)
    if any(m.mirror_agreement is not None for m in masks):
        legend += f"<p>{render.escape_text(MIRROR_NOTE)}</p>"
    return legend


def mask_detail(mask: MaskData) -> str:
    """The legend's line for one mask: its size, the model's confidence, the mirror check."""
    parts = [f"{mask.area_px:,} px"]
    if mask.score is not None:
        parts.append(f"score {mask.score:.2f}")
    if mask.mirror_agreement is not None:
        parts.append(f"mirror agreement {mask.mirror_agreement:.2f}")
    return ", ".join(parts)


def mask_downloads(web: Web, session: SessionData, turn: TurnData) -> list[str]:
    """PNG and RLE JSON files of a turn's masks; the caller has checked read access."""
    paths = []
    stem = f"session-{session.id[:8]}-answer{turn.index + 1}"
    for mask in turn.masks:
        png = web.platform.store.get(mask.png_key)
        paths.append(web.download_path(f"{stem}-mask{mask.index + 1}.png", png))
        doc = {
            "session_id": session.id,
            "turn_id": turn.id,
            "mask_index": mask.index,
            "rle": mask.rle,
            "area_px": mask.area_px,
            "bbox_xyxy_px": mask.bbox_xyxy_px,
            "score": mask.score,
            "mirror_agreement": mask.mirror_agreement,
        }
        data = json.dumps(doc, indent=1).encode()
        paths.append(web.download_path(f"{stem}-mask{mask.index + 1}.rle.json", data))
    return paths
