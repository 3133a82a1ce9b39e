"""The arena tab: a question on the current image, two blind answers, a vote, the leaderboard;
and, for admins, which checkpoints new questions and the arena use."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import gradio as gr

from medplib.masks import decode_rle, resize_mask_nearest
from serving.enums import Role
from serving.services.arena import Leaderboard, MatchView, SideView, leaderboard, match_view, vote
from serving.services.checkpoints import CheckpointChoices, checkpoint_choices, set_checkpoints
from webapp import render
from webapp.handlers.common import UserFacingError, Web, ensured_state, to_actor, user_errors
from webapp.regions import resolve_references
from webapp.state import ActorState, ViewState

# Reading the match while its answers are coming (two jobs, so no single job's notices).
POLL_INTERVAL_S = 0.5
CHOICES = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both are bad"}
VOTE_BUTTONS = tuple(f"arena_vote_{choice}" for choice in CHOICES)
BOARD_HEADERS = ["rank", "checkpoint", "score", "95 % interval", "votes", "wins", "losses", "ties"]
SIDE_OUTPUTS = ("arena_image_a", "arena_answer_a", "arena_image_b", "arena_answer_b")


def _failed(exc: UserFacingError) -> dict[str, Any]:
    return {"arena_status": f"⚠ {render.escape_text(str(exc))}"}


def _buttons(active: bool) -> dict[str, Any]:
    return {name: gr.update(interactive=active) for name in VOTE_BUTTONS}


def start(
    web: Web,
    question: str,
    view: ViewState,
    drawn: list[dict[str, Any]] | None,
    actor_state: ActorState | None,
    session_hash: str | None,
) -> dict[str, Any]:
    """Queue the question on two checkpoints; the screen waits for both answers."""
    if not view.get("image_id"):
        return {
            "arena_status": "Upload an image on the Ask tab first; the arena asks about it.",
            "arena_pending": None,
        }
    try:
        actor, actor_state = ensured_state(web, actor_state, session_hash)
        with user_errors():
            saved = len(view.get("saved") or [])
            resolved = resolve_references(question or "", drawn or [], implicit_from=saved + 1)
            started = web.platform.start_match(
                actor=actor,
                image_id=view["image_id"],
                question=resolved.text,
                regions=resolved.regions,
            )
    except UserFacingError as exc:
        # The question stays in its box; nothing new to follow (the match shown stays).
        return {**_failed(exc), "arena_pending": None}
    return {
        "actor": actor_state,
        "arena_match": started.match_id,
        "arena_pending": started.match_id,
        "arena_status": "Two checkpoints are answering…",
        "arena_reveal": "",
        **dict.fromkeys(SIDE_OUTPUTS),
        **_buttons(False),
    }


async def follow(
    web: Web, match_id: str | None, actor_state: ActorState | None
) -> AsyncIterator[dict[str, Any]]:
    """Show the match as its answers come in, until both are in (or the time limit)."""
    actor = to_actor(actor_state)
    if actor is None or not match_id:
        yield {"arena_status": gr.update()}
        return
    deadline = time.monotonic() + web.settings.job_time_limit_s + 30
    shown = ""
    while True:
        try:
            match = await asyncio.to_thread(web.call, match_view, actor=actor, match_id=match_id)
        except UserFacingError as exc:
            yield _failed(exc)
            return
        if match.finished or time.monotonic() > deadline:
            break
        status = " · ".join(f"{side.label}: {_progress(side)}" for side in match.sides)
        if status != shown:
            shown = status
            yield {"arena_status": status}
        await asyncio.sleep(POLL_INTERVAL_S)
    yield await asyncio.to_thread(screen, web, match)


def _progress(side: SideView) -> str:
    return render.job_status_text(
        side.status.value, position=None, phase=None, progress=side.progress, error=side.error
    )


def screen(web: Web, match: MatchView) -> dict[str, Any]:
    """Both answers with their masks, and the names once voted."""
    out: dict[str, Any] = {}
    shown = web.shown_image(match.image.display_key, match.image.width_px, match.image.height_px)
    for side in match.sides:
        key = side.label.lower()
        masks = [resize_mask_nearest(decode_rle(m.rle), shown.shape[:2]) for m in side.masks]
        out[f"arena_image_{key}"] = render.overlay_masks(shown, masks, opacity=0.45)
        out[f"arena_answer_{key}"] = _answer_text(side)
    ready = match.finished and match.vote is None
    if match.vote is not None:
        out["arena_status"] = f"You voted: {CHOICES[match.vote.value]}."
    elif not match.finished:
        out["arena_status"] = "The answers are taking long; they appear here once stored."
    elif all(side.answer is not None for side in match.sides):
        out["arena_status"] = "Which answer is better? Vote to see which checkpoint gave which."
    else:
        out["arena_status"] = "One side could not answer; this match cannot be judged."
        ready = False
    out["arena_reveal"] = reveal_text(match)
    return {**out, **_buttons(ready)}


def _answer_text(side: SideView) -> str:
    if side.answer is None:
        return f"*{render.escape_text(_progress(side))}*"
    count = f"{len(side.masks)} mask(s)" if side.masks else "no mask"
    return f"{render.escape_text(side.answer_with_marks)}\n\n*{count}*"


def reveal_text(match: MatchView) -> str:
    if match.names is None:
        return ""
    by = match.answered_by or (None, None)
    lines = [
        f"**{label}** was checkpoint **{render.escape_text(name)}**"
        + (f" ({render.escape_text(reported)})" if reported else "")
        for label, name, reported in zip(("A", "B"), match.names, by, strict=True)
    ]
    return "  \n".join(lines)


def cast(
    web: Web, match_id: str | None, choice: str, actor_state: ActorState | None
) -> dict[str, Any]:
    actor = to_actor(actor_state)
    if actor is None or not match_id:
        return {"arena_status": "Start a match first."}
    try:
        match = web.call(vote, actor=actor, match_id=match_id, choice=choice)
    except UserFacingError as exc:
        return _failed(exc)
    return {**screen(web, match), **board(web)}


def board(web: Web) -> dict[str, Any]:
    try:
        result = web.call(leaderboard)
    except UserFacingError as exc:
        return _failed(exc)
    return {"arena_board": board_rows(result), "arena_matrix": matrix_table(result)}


def board_rows(result: Leaderboard) -> list[list[Any]]:
    return [
        [
            rank,
            row["model"],
            row["score"],
            f"{row['interval'][0]:.1f} – {row['interval'][1]:.1f}",
            row["votes"],
            row["wins"],
            row["losses"],
            row["ties"],
        ]
        for rank, row in enumerate(result.rows, start=1)
    ]


def matrix_table(result: Leaderboard) -> dict[str, Any]:
    """Row x, column y: how often x beat y (a tie or "both bad" counts half to each)."""
    names = [row["model"] for row in result.rows]
    data = [[x, *("—" if x == y else f"{result.matrix[x][y]:g}" for y in names)] for x in names]
    return {"headers": ["won ↓ against →", *names], "data": data}


# Admins: the checkpoints accordion.


def admin_panel(web: Web, actor_state: ActorState | None) -> dict[str, Any]:
    """The accordion for admins (hidden from everyone else), filled with the current choices."""
    actor = to_actor(actor_state)
    if actor is None or actor.role is not Role.admin:
        return {"arena_admin": gr.update(visible=False)}
    try:
        choices = web.call(checkpoint_choices, settings=web.settings)
    except UserFacingError as exc:
        return {"arena_admin": gr.update(visible=True), "arena_admin_status": str(exc)}
    return {"arena_admin": gr.update(visible=True), **_choice_values(choices)}


def _choice_values(choices: CheckpointChoices) -> dict[str, Any]:
    notes = " ".join(choices.notes)
    return {
        "arena_default": gr.update(choices=choices.available, value=choices.default),
        "arena_pool": gr.update(choices=choices.available, value=choices.arena),
        "arena_admin_status": render.escape_text(notes),
    }


def save_choices(
    web: Web, default: str | None, pool: list[str] | None, actor_state: ActorState | None
) -> dict[str, Any]:
    actor = to_actor(actor_state)
    if actor is None:
        return {"arena_admin_status": "Log in with an admin account first."}
    try:
        choices = web.call(
            set_checkpoints,
            actor=actor,
            settings=web.settings,
            default=default or None,
            arena=list(pool or []),
        )
    except UserFacingError as exc:
        return {"arena_admin_status": f"⚠ {render.escape_text(str(exc))}"}
    out = _choice_values(choices)
    out["arena_admin_status"] = (
        f"Saved: new questions go to **{render.escape_text(choices.default)}**; the arena uses "
        f"{render.escape_text(', '.join(choices.arena))}. " + out["arena_admin_status"]
    )
    return out
