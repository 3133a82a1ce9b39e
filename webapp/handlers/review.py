"""The reviewer's queue, rating form, agreement statistics and exports."""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from medplib.masks import decode_rle, encode_rle, fill_holes, resize_mask_nearest
from serving.services.corrections import (
    MaskVersionData,
    correct_mask,
    mask_index_of,
    mask_versions,
)
from serving.services.reviews import (
    export_ratings,
    rate_turn,
    review_case,
    review_queue,
    review_statistics,
)
from webapp import render
from webapp.handlers.common import UserFacingError, Web, to_actor, user_errors
from webapp.regions import question_for_display
from webapp.state import ActorState
from webapp.widgets import editor_layer_to_mask

# The form has this many mask-verdict pickers; answers with more masks are rated elsewhere.
MAX_MASK_VERDICTS = 8
VERDICTS = ["good", "partly", "wrong"]
CORRECT_CHOICES = ["yes", "no", "unsure"]
FRESH_FORM: dict[str, Any] = {"review_score": 3, "review_correct": "unsure", "review_comment": ""}
AGREEMENT_HEADERS = ["reviewers", "answers rated by all of them", "κ text score", "κ correct"]
MASK_AGREEMENT_HEADERS = ["reviewers", "masks corrected by both", "mean Dice", "mean IoU"]
VERDICT_SIGNAL_HEADERS = [
    "verdict",
    "masks rated",
    "model's mean score",
    "masks with a mirror check",
    "mean mirror agreement",
]
CORRECTION_MODES = ["add to the mask", "remove from the mask", "replace the mask"]
CHECKPOINT_HEADERS = [
    "checkpoint",
    "ratings",
    "mean_text_score",
    "share_correct",
    "masks_rated",
    "masks_good",
    "masks_partly",
    "masks_wrong",
]


def _fail(exc: UserFacingError) -> dict[str, Any]:
    return {"review_status": f"⚠ {render.escape_text(str(exc))}"}


def load_queue(web: Web, actor_state: ActorState | None) -> dict[str, Any]:
    actor = to_actor(actor_state)
    if actor is None:
        return {"review_status": "Log in with a reviewer account first."}

    try:
        queue = web.call(review_queue, actor=actor, limit=50)
    except UserFacingError as exc:
        return _fail(exc)
    choices = [(f"{t.answered_at:%Y-%m-%d %H:%M} — {t.question[:60]}", t.id) for t in queue]
    first = choices[0][1] if choices else None
    status = f"{len(choices)} answers to rate." if choices else "Nothing left to rate."
    return {"review_pick": gr.update(choices=choices, value=first), "review_status": status}


def show_item(web: Web, turn_id: str | None, actor_state: ActorState | None) -> dict:
    """The answer under review: image with its masks, question, answer, one picker per mask."""
    actor = to_actor(actor_state)
    hidden = {
        f"verdict_{i}": gr.update(visible=False, value=None) for i in range(MAX_MASK_VERDICTS)
    }
    if actor is None or not turn_id:
        return {"review_image": None, "review_text": "", **hidden}

    try:
        case = web.call(review_case, actor=actor, turn_id=turn_id)
    except UserFacingError as exc:
        return {**_fail(exc), **hidden}
    turn, image = case.turn, case.image
    shown = web.shown_image(image.display_key, image.width_px, image.height_px)
    masks = [resize_mask_nearest(decode_rle(m.rle), shown.shape[:2]) for m in turn.masks]
    question = question_for_display(turn.question, turn.regions)
    text = (
        f"**Question:** {render.escape_text(question)}\n\n"
        f"**Answer:** {render.escape_text(turn.answer_with_marks)}\n\n"
        f"{len(turn.masks)} mask(s)."
    )
    out: dict[str, Any] = {
        "review_image": render.overlay_masks(shown, masks, opacity=0.45),
        "review_text": text,
        "review_badge": render.checkpoint_badge_html(turn.checkpoint_id),
        **hidden,
    }
    for i in range(min(len(turn.masks), MAX_MASK_VERDICTS)):
        out[f"verdict_{i}"] = gr.update(visible=True, value=None, label=f"mask {i + 1}")
    if len(turn.masks) > MAX_MASK_VERDICTS:
        out["review_status"] = (
            f"This answer has {len(turn.masks)} masks; the form rates at most "
            f"{MAX_MASK_VERDICTS}. Use the API to rate it."
        )
    return out


def submit_rating(
    web: Web,
    turn_id: str | None,
    text_score: float | None,
    correct: str | None,
    comment: str,
    verdicts: list[str | None],
    actor_state: ActorState | None,
) -> dict[str, Any]:
    actor = to_actor(actor_state)
    if actor is None or not turn_id:
        return {"review_status": "Pick an answer to rate."}
    # Hidden pickers hold None; the service checks there is one verdict per mask.
    given = [v for v in verdicts if v is not None]
    try:
        web.call(
            rate_turn,
            actor=actor,
            turn_id=turn_id,
            text_score=text_score if text_score is not None else 0,
            text_correct={"yes": True, "no": False}.get(correct or "unsure"),
            mask_verdicts=list(given),
            comment=comment or "",
        )
    except UserFacingError as exc:
        return _fail(exc)  # the form keeps what was entered
    out = load_queue(web, actor_state)
    out["review_status"] = "Rating saved. " + str(out.get("review_status", ""))
    # A fresh form for the next answer (its mask pickers are reset when it is shown).
    out.update(FRESH_FORM)
    return out


def statistics(web: Web, actor_state: ActorState | None) -> dict[str, Any]:
    """Agreement between reviewers and the per-checkpoint table (reviewers only)."""
    actor = to_actor(actor_state)
    if actor is None:
        return {"review_status": "Log in with a reviewer account first."}

    try:
        stats = web.call(review_statistics, actor=actor)
    except UserFacingError as exc:
        return _fail(exc)
    rows = [[row.get(h) for h in CHECKPOINT_HEADERS] for row in stats.checkpoints]
    return {
        "agreement": agreement_rows(stats.agreement),
        "mask_agreement": mask_agreement_rows(stats.masks),
        "verdict_signals": verdict_signal_rows(stats.signals),
        "checkpoint_table": rows,
    }


def _two_places(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def agreement_rows(report: dict[str, Any]) -> list[list[Any]]:
    """The agreement report as table rows: all reviewers first, then each pair by name."""
    kappa = _two_places
    fleiss = report.get("fleiss") or {}
    rows: list[list[Any]] = [
        [
            "all reviewers (Fleiss)",
            report.get("items_with_two_or_more", 0),
            kappa(fleiss.get("text_score")),
            kappa(fleiss.get("text_correct")),
        ]
    ]
    for pair in report.get("cohen") or []:
        rows.append(
            [
                " & ".join(pair["names"]) + " (Cohen)",
                pair["items"],
                kappa(pair["text_score"]),
                kappa(pair["text_correct"]),
            ]
        )
    return rows


def mask_agreement_rows(report: dict[str, Any]) -> list[list[Any]]:
    """Corrected-mask agreement as table rows: all pairs together, then each pair by name."""
    score = _two_places
    overall = report.get("overall") or {}
    rows: list[list[Any]] = [
        [
            "all reviewer pairs",
            overall.get("items", 0),
            score(overall.get("dice")),
            score(overall.get("iou")),
        ]
    ]
    for pair in report.get("by_pair") or []:
        rows.append(
            [" & ".join(pair["names"]), pair["items"], score(pair["dice"]), score(pair["iou"])]
        )
    return rows


def verdict_signal_rows(signals: list[dict[str, Any]]) -> list[list[Any]]:
    """Per verdict: masks rated, then the model's mean score and mirror agreement for them."""
    return [
        [
            row["verdict"],
            row["masks_rated"],
            _two_places(row["mean_score"]),
            row["masks_checked"],
            _two_places(row["mean_mirror_agreement"]),
        ]
        for row in signals
    ]


def _versions_markdown(versions: list[MaskVersionData]) -> str:
    lines = [
        f"- version {v.version}: {render.escape_text(v.author)}, {v.area_px} px"
        + (f", {v.created_at:%Y-%m-%d %H:%M}" if v.created_at else "")
        for v in versions
    ]
    return (
        "**Versions of this mask** (0 is the model's; none is ever overwritten):\n\n"
        + "\n".join(lines)
    )


def _mask_index(mask_number: float | None) -> int:
    with user_errors():
        return mask_index_of(mask_number)


def _editor_value(web: Web, image: Any, latest_rle: dict[str, Any]) -> dict[str, Any]:
    """The image as shown with the mask's latest version tinted in, and nothing painted yet.

    The mask is part of the background (the editor's own layers do not reliably show a layer
    sent from the server), so strokes are combined with it by the chosen mode on save.
    """
    shown = web.shown_image(image.display_key, image.width_px, image.height_px)  # (h, w, 3)
    latest = resize_mask_nearest(decode_rle(latest_rle), shown.shape[:2])
    tinted = render.overlay_masks(shown, [latest], opacity=0.45)
    # An empty layer at the image's size for the strokes (the first layer is what is read).
    blank = np.zeros((*shown.shape[:2], 4), dtype=np.uint8)  # (h, w, RGBA)
    return {"background": tinted, "layers": [blank], "composite": None}


def open_correction(
    web: Web, turn_id: str | None, mask_number: float | None, actor_state: ActorState | None
) -> dict[str, Any]:
    """The editor on the image as shown, with the mask's latest version tinted in."""
    actor = to_actor(actor_state)
    if actor is None or not turn_id:
        return {"correction_status": "Pick an answer first."}
    try:
        index = _mask_index(mask_number)
        case = web.call(review_case, actor=actor, turn_id=turn_id)
        versions = web.call(mask_versions, actor=actor, turn_id=turn_id, mask_index=index)
    except UserFacingError as exc:
        return {"correction_status": f"⚠ {render.escape_text(str(exc))}"}
    return {
        "correction_editor": _editor_value(web, case.image, versions[-1].rle),
        "correction_versions": _versions_markdown(versions),
        "correction_status": (
            f"Mask {index + 1}, version {versions[-1].version} (tinted). Paint, pick what the "
            "strokes do, then save."
        ),
    }


def combine(latest: np.ndarray, painted: np.ndarray, mode: str) -> np.ndarray:
    """The corrected mask: strokes added to, removed from, or replacing the latest version."""
    if mode == "remove from the mask":
        return latest & ~painted
    if mode == "replace the mask":
        return painted.copy()
    return latest | painted


def save_correction(
    web: Web,
    turn_id: str | None,
    mask_number: float | None,
    mode: str | None,
    editor: dict[str, Any] | None,
    actor_state: ActorState | None,
    *,
    fill: bool = False,
) -> dict[str, Any]:
    """Combine the strokes with the latest version and save the result as the next version.

    With `fill`, what a closed stroke outlines counts as painted too (the editor's brush
    draws outlines; filling a structure by hand would take many strokes).
    """
    actor = to_actor(actor_state)
    if actor is None or not turn_id:
        return {"correction_status": "Pick an answer first."}
    layers = [layer for layer in (editor or {}).get("layers") or [] if layer is not None]
    if mode not in CORRECTION_MODES:
        return {
            "correction_status": f"⚠ Choose what the strokes do: {', '.join(CORRECTION_MODES)}."
        }
    try:
        index = _mask_index(mask_number)
        case = web.call(review_case, actor=actor, turn_id=turn_id)
        image = case.image
        with user_errors():
            painted = np.zeros((image.height_px, image.width_px), dtype=bool)  # (H, W)
            for layer in layers:
                painted |= editor_layer_to_mask(
                    np.asarray(layer), height_px=image.height_px, width_px=image.width_px
                )
        if not painted.any():
            raise UserFacingError("Nothing is painted yet: open the mask, then paint on it.")
        if fill:
            painted = fill_holes(painted)
        versions = web.call(mask_versions, actor=actor, turn_id=turn_id, mask_index=index)
        latest = decode_rle(versions[-1].rle)
        corrected = combine(latest, painted, mode)
        if np.array_equal(corrected, latest):
            raise UserFacingError(f"The strokes do not change the mask ({mode}); nothing saved.")
        saved = web.call(
            correct_mask,
            actor=actor,
            store=web.platform.store,
            turn_id=turn_id,
            mask_index=index,
            mask_rle=encode_rle(corrected),
        )
    except UserFacingError as exc:
        return {"correction_status": f"⚠ {render.escape_text(str(exc))}"}  # the drawing stays
    return {
        "correction_editor": _editor_value(web, image, saved.rle),
        "correction_versions": _versions_markdown([*versions, saved]),
        "correction_status": f"Saved as version {saved.version} of mask {index + 1}.",
    }


def export(web: Web, fmt: str, actor_state: ActorState | None) -> dict[str, Any]:
    actor = to_actor(actor_state)
    if actor is None:
        return {"review_status": "Log in with a reviewer account first."}
    try:
        text = web.call(export_ratings, actor=actor, fmt=fmt)
    except UserFacingError as exc:
        return _fail(exc)
    path = web.download_path(f"medplib-ratings.{fmt}", text.encode())
    count = len(text.splitlines()) - (1 if fmt == "csv" else 0)  # csv has a header line
    return {"export_file": path, "review_status": f"Exported {count} rating(s) as {fmt}."}
