"""The reviewer's queue, rating form, agreement statistics and exports."""

from __future__ import annotations

from typing import Any

import gradio as gr

from medplib.masks import decode_rle, resize_mask_nearest
from serving.services.reviews import (
    export_ratings,
    rate_turn,
    review_case,
    review_queue,
    review_statistics,
)
from webapp import render
from webapp.handlers.common import UserFacingError, Web, to_actor
from webapp.regions import question_for_display
from webapp.state import ActorState

# The form has this many mask-verdict pickers; answers with more masks are rated elsewhere.
MAX_MASK_VERDICTS = 8
VERDICTS = ["good", "partly", "wrong"]
CORRECT_CHOICES = ["yes", "no", "unsure"]
FRESH_FORM: dict[str, Any] = {"review_score": 3, "review_correct": "unsure", "review_comment": ""}
AGREEMENT_HEADERS = ["reviewers", "answers rated by all of them", "κ text score", "κ correct"]
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
        f"**Answer:** {render.escape_text(turn.answer)}\n\n"
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
    return {"agreement": agreement_rows(stats.agreement), "checkpoint_table": rows}


def agreement_rows(report: dict[str, Any]) -> list[list[Any]]:
    """The agreement report as table rows: all reviewers first, then each pair by name."""

    def kappa(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

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
