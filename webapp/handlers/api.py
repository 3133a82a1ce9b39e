"""Named endpoints for `gradio_client`: plain values in, JSON out, `gr.Error` on refusal.

The actor is the same per-connection ``gr.State`` the page uses: a client that calls
``/login`` first acts as that user for its later calls; one that does not is anonymous.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import gradio as gr

from serving.enums import LinkKind, LinkRole
from serving.job_events import changed_within
from serving.services.arena import MatchView, leaderboard, match_view, vote
from serving.services.checkpoints import checkpoint_choices, set_checkpoints
from serving.services.reading import read_session
from serving.services.reviews import export_ratings, rate_turn, review_queue
from serving.services.sessions import log_in
from serving.services.shares import expiry_from_hours, fork_session, revoke_link, share_session
from serving.services.turns import JobOutcome, job_outcome
from serving.services.uploads import start_session
from serving.services.validation import volume_choice
from serving.views import SessionData, TurnData
from webapp.handlers.common import (
    UserFacingError,
    Web,
    ensured_state,
    to_actor,
    uploaded_path,
    user_errors,
)
from webapp.handlers.share import share_url
from webapp.regions import resolve_references
from webapp.render import UNTRAINED_MARKER

# Reading the job while notices cannot arrive (the Redis relay is down) ...
POLL_INTERVAL_S = 0.2
# ... and, with notices flowing, a safety re-read in case one was lost.
FALLBACK_S = 5.0


def _refuse(exc: BaseException) -> gr.Error:
    return gr.Error(str(exc), duration=None)


@contextmanager
def _refusals() -> Iterator[None]:
    """Service and input errors become the refusal a client sees (see `_refuse`)."""
    try:
        with user_errors():
            yield
    except UserFacingError as exc:
        raise _refuse(exc) from None


def _call(web: Web, fn: Any, /, **kwargs: Any) -> Any:
    with _refusals():
        return web.call(fn, **kwargs)


def _json_arg(text: str | None, what: str) -> Any:
    if text is None or not str(text).strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise gr.Error(f"{what} is not valid JSON ({exc.msg} at character {exc.pos}).") from None


def _regions_arg(regions_json: str | None) -> list[dict[str, Any]]:
    regions = _json_arg(regions_json, "regions_json") or []
    if not isinstance(regions, list) or not all(isinstance(item, dict) for item in regions):
        raise gr.Error(
            'regions_json must be a JSON list of regions like {"kind": "box", "xyxy_px": [...]}.'
        )
    for number, item in enumerate(regions, start=1):
        item["label"] = number  # "region N" means the N-th item of the list
    return regions


def turn_json(turn: TurnData) -> dict[str, Any]:
    return {
        "turn_id": turn.id,
        "index": turn.index,
        "question": turn.question,
        "regions": turn.regions,
        "answer": turn.answer,
        "answer_with_marks": turn.answer_with_marks,
        "checkpoint_id": turn.checkpoint_id,
        "untrained": bool(turn.checkpoint_id and UNTRAINED_MARKER in turn.checkpoint_id.lower()),
        "masks": [
            {
                "index": m.index,
                "rle": m.rle,
                "area_px": m.area_px,
                "bbox_xyxy_px": m.bbox_xyxy_px,
                "score": m.score,
                "mirror_agreement": m.mirror_agreement,
            }
            for m in turn.masks
        ],
        "routing": turn.routing,
        "warnings": turn.warnings,
        "job": {"id": turn.job_id, "status": turn.job_status, "error": turn.job_error},
    }


def session_json(session: SessionData) -> dict[str, Any]:
    image = session.image
    return {
        "session_id": session.id,
        "title": session.title,
        "read_only": session.read_only,
        "can_fork": session.can_fork,
        "image": {
            "id": image.id,
            "width_px": image.width_px,
            "height_px": image.height_px,
            "filename": image.filename,
            "source_format": image.source_format,
            "notes": image.notes,
        },
        "regions": session.regions,
        "turns": [turn_json(t) for t in session.turns],
    }


def login(web: Web, username: str, password: str, state: Any) -> tuple[Any, dict]:
    """Log this client in; what it made anonymously (its connection's secret, kept in the
    server-side state) moves to the account."""
    secret = state.get("browser_secret") if isinstance(state, dict) else None

    done = _call(
        web,
        log_in,
        username=username or "",
        password=password or "",
        anonymous_secret=secret,
    )
    if done is None:
        raise gr.Error("Wrong username or password.")
    actor = done[0]
    fresh = {
        "user_id": actor.user_id,
        "role": actor.role.value,
        "anonymous": False,
        "username": (username or "").strip(),
    }
    return fresh, {"username": fresh["username"], "role": fresh["role"]}


def upload(
    web: Web,
    path: str | None,
    window: str | None,
    nifti_axis: float | None,
    nifti_slice: float | None,
    title: str | None,
    state: Any,
    session_hash: str | None,
) -> tuple[Any, dict]:
    """Ingest an image and open a new session on it."""
    if not path:
        raise gr.Error("Send an image file.")
    try:
        path = uploaded_path(path)
    except UserFacingError as exc:
        raise gr.Error(str(exc)) from None
    actor, state = ensured_state(web, state, session_hash)
    size = os.path.getsize(path)
    if size > web.settings.max_upload_bytes:
        raise gr.Error(
            f"The file is {size / 1e6:.1f} MB; the limit is "
            f"{web.settings.max_upload_bytes / 1e6:.1f} MB."
        )
    with open(path, "rb") as fh:
        data = fh.read()
    with _refusals():
        axis, index = volume_choice(nifti_axis, nifti_slice)
    made = _call(
        web,
        start_session,
        actor=actor,
        store=web.platform.store,
        settings=web.settings,
        data=data,
        filename=os.path.basename(path),
        title=title or "",
        window=window or None,
        nifti_axis=axis,
        nifti_slice=index,
    )
    image = made.image
    return state, {
        "session_id": made.session_id,
        "image_id": image.id,
        "width_px": image.width_px,
        "height_px": image.height_px,
        "source_format": image.source_format,
        "notes": image.notes,
    }


def outcome_json(outcome: JobOutcome) -> dict[str, Any]:
    job = outcome.job
    out: dict[str, Any] = {
        "job_id": job.id,
        "status": job.status.value,
        "position": job.position,
        "progress": job.progress,
        "phase": job.phase,
        "error": job.error,
        "session_id": job.session_id,
        "turn_index": job.turn_index,
    }
    if outcome.turn is not None:
        out["turn"] = turn_json(outcome.turn)
    return out


def _job_json(web: Web, actor: Any, job_id: str) -> dict[str, Any]:
    # Someone else's job is answered like a missing one.
    return outcome_json(_call(web, job_outcome, actor=actor, job_id=job_id))


def job(web: Web, job_id: str, state: Any, session_hash: str | None) -> dict[str, Any]:
    actor, _ = ensured_state(web, state, session_hash)
    return _job_json(web, actor, (job_id or "").strip())


async def ask(
    web: Web,
    session_id: str,
    question: str,
    regions_json: str | None,
    wait: bool,
    state: Any,
    session_hash: str | None,
) -> tuple[Any, dict]:
    """Ask in one of the caller's sessions; with ``wait`` return the finished answer."""
    actor, state = await asyncio.to_thread(ensured_state, web, state, session_hash)
    regions = _regions_arg(regions_json)
    with _refusals():
        resolved = resolve_references(question or "", regions)
        view = await asyncio.to_thread(
            lambda: web.ask(
                actor=actor,
                session_id=(session_id or "").strip(),
                question=resolved.text,
                regions=resolved.regions,
            )
        )
    deadline = time.monotonic() + web.settings.job_time_limit_s + 30
    events = web.platform.events
    # Subscribed before the first read, so the end of a fast job is not missed.
    async with events.subscribe(view.id) as changed:
        result = await asyncio.to_thread(_job_json, web, actor, view.id)
        seen = events.state(view.id)
        while wait and result["status"] in ("queued", "running") and time.monotonic() < deadline:
            woke = await changed_within(changed, FALLBACK_S if events.live else POLL_INTERVAL_S)
            if woke and events.state(view.id) == seen:
                continue  # streamed text only: the stored job has not changed
            seen = events.state(view.id)
            result = await asyncio.to_thread(_job_json, web, actor, view.id)
    return state, result


def session(
    web: Web, session_id: str | None, token: str | None, state: Any, session_hash: str | None
) -> dict[str, Any]:
    actor, _ = ensured_state(web, state, session_hash)
    data = _call(
        web,
        read_session,
        actor=actor,
        session_id=(session_id or "").strip() or None,
        token=(token or "").strip() or None,
    )
    return session_json(data)


def share(
    web: Web,
    session_id: str,
    role: str,
    expires_hours: float | None,
    as_class: bool,
    state: Any,
    session_hash: str | None,
    base_url: str,
) -> dict[str, Any]:
    actor, _ = ensured_state(web, state, session_hash)
    if role not in ("view", "fork"):
        raise gr.Error("role must be 'view' or 'fork'.")
    with _refusals():
        expires_in = expiry_from_hours(expires_hours)
    made = _call(
        web,
        share_session,
        actor=actor,
        session_id=(session_id or "").strip(),
        role=LinkRole(role),
        kind=LinkKind.klass if as_class else LinkKind.session,
        expires_in=expires_in,
    )
    link = made.link
    return {
        "link_id": link.id,
        "token": made.token,
        "role": link.role.value,
        "kind": link.kind.value,
        "expires_at": link.expires_at.isoformat() if link.expires_at else None,
        "url": share_url(base_url, made.token, kind=link.kind.value),
    }


def fork(web: Web, token: str, state: Any, session_hash: str | None) -> tuple[Any, dict]:
    actor, state = ensured_state(web, state, session_hash)
    copy = _call(web, fork_session, actor=actor, token=(token or "").strip())
    return state, {"session_id": copy.id}


def revoke(web: Web, link_id: str, state: Any, session_hash: str | None) -> dict[str, Any]:
    actor, _ = ensured_state(web, state, session_hash)
    link = _call(web, revoke_link, actor=actor, link_id=(link_id or "").strip())
    return {"link_id": link.id, "revoked": True}


def review_items(web: Web, state: Any) -> dict[str, Any]:
    actor = to_actor(state)
    if actor is None:
        raise gr.Error("Log in with a reviewer account first (/login).")
    queue = _call(web, review_queue, actor=actor, limit=100)
    return {"items": [_review_item(t) for t in queue]}


def _review_item(turn: TurnData) -> dict[str, Any]:
    return {
        "turn_id": turn.id,
        "question": turn.question,
        "answer": turn.answer,
        "masks": len(turn.masks),
        "checkpoint_id": turn.checkpoint_id,
    }


def rate(
    web: Web,
    turn_id: str,
    text_score: float,
    text_correct: str | None,
    mask_verdicts_json: str | None,
    comment: str | None,
    state: Any,
) -> dict[str, Any]:
    actor = to_actor(state)
    if actor is None:
        raise gr.Error("Rating needs a reviewer account; call /login first.")
    verdicts = _json_arg(mask_verdicts_json, "mask_verdicts_json") or []
    if not isinstance(verdicts, list) or not all(isinstance(v, str) for v in verdicts):
        raise gr.Error('mask_verdicts_json must be a JSON list like ["good", "wrong"].')
    correct = {"yes": True, "true": True, "no": False, "false": False}.get(
        (text_correct or "").strip().lower()
    )
    rating = _call(
        web,
        rate_turn,
        actor=actor,
        turn_id=(turn_id or "").strip(),
        text_score=text_score,
        text_correct=correct,
        mask_verdicts=verdicts,
        comment=comment or "",
    )
    return {"rating_id": rating.id, "turn_id": turn_id}


def export(web: Web, fmt: str, state: Any) -> str:
    actor = to_actor(state)
    if actor is None:
        raise gr.Error("Exports need a reviewer account; call /login first.")
    text = _call(web, export_ratings, actor=actor, fmt=(fmt or "csv").strip().lower())
    return web.download_path(f"medplib-ratings.{fmt}", text.encode())


# The arena and the checkpoint choices.


def match_json(match: MatchView) -> dict[str, Any]:
    """A match as its player sees it: sides A and B, names only once voted."""
    return {
        "match_id": match.id,
        "question": match.question,
        "regions": match.regions,
        "image_id": match.image.id,
        "finished": match.finished,
        "sides": [
            {
                "label": side.label,
                "status": side.status.value,
                "answer": side.answer,
                "error": side.error,
                "masks": [
                    {
                        "index": m.index,
                        "rle": m.rle,
                        "area_px": m.area_px,
                        "score": m.score,
                        "mirror_agreement": m.mirror_agreement,
                    }
                    for m in side.masks
                ],
            }
            for side in match.sides
        ],
        "vote": match.vote.value if match.vote is not None else None,
        "checkpoints": list(match.names) if match.names is not None else None,
    }


async def arena_start(
    web: Web,
    image_id: str,
    question: str,
    regions_json: str | None,
    checkpoints_json: str | None,
    wait: bool,
    state: Any,
    session_hash: str | None,
) -> tuple[Any, dict]:
    """Ask two checkpoints (named, or drawn from the arena's) the same question on an image."""
    actor, state = await asyncio.to_thread(ensured_state, web, state, session_hash)
    regions = _regions_arg(regions_json)
    pair = _json_arg(checkpoints_json, "checkpoints_json")
    if pair is not None and not isinstance(pair, list):
        raise gr.Error('checkpoints_json must be a JSON list of two names like ["a", "b"].')
    with _refusals():
        resolved = resolve_references(question or "", regions)
        started = await asyncio.to_thread(
            lambda: web.platform.start_match(
                actor=actor,
                image_id=(image_id or "").strip(),
                question=resolved.text,
                regions=resolved.regions,
                checkpoints=pair,
            )
        )
    deadline = time.monotonic() + web.settings.job_time_limit_s + 30
    while True:
        match = await asyncio.to_thread(
            _call, web, match_view, actor=actor, match_id=started.match_id
        )
        if not wait or match.finished or time.monotonic() > deadline:
            return state, match_json(match)
        await asyncio.sleep(POLL_INTERVAL_S)


def arena_match(web: Web, match_id: str, state: Any, session_hash: str | None) -> dict[str, Any]:
    actor, _ = ensured_state(web, state, session_hash)
    return match_json(_call(web, match_view, actor=actor, match_id=(match_id or "").strip()))


def arena_vote(
    web: Web, match_id: str, choice: str, state: Any, session_hash: str | None
) -> dict[str, Any]:
    actor, _ = ensured_state(web, state, session_hash)
    match = _call(
        web, vote, actor=actor, match_id=(match_id or "").strip(), choice=(choice or "").strip()
    )
    return match_json(match)


def arena_leaderboard(web: Web) -> dict[str, Any]:
    board = _call(web, leaderboard)
    rows = [{**row, "interval": list(row["interval"])} for row in board.rows]
    return {"votes": board.votes, "rows": rows, "win_matrix": board.matrix}


def checkpoints(web: Web) -> dict[str, Any]:
    return asdict(_call(web, checkpoint_choices, settings=web.settings))


def set_checkpoint_choices(
    web: Web, default: str | None, arena_json: str | None, state: Any
) -> dict[str, Any]:
    actor = to_actor(state)
    if actor is None:
        raise gr.Error("Choosing checkpoints needs an admin account; call /login first.")
    pool = _json_arg(arena_json, "arena_json")
    choices = _call(
        web,
        set_checkpoints,
        actor=actor,
        settings=web.settings,
        default=(default or "").strip() or None,
        arena=pool,
    )
    return asdict(choices)
