"""Named endpoints for `gradio_client`: plain values in, JSON out, `gr.Error` on refusal.

The actor is the same per-connection ``gr.State`` the page uses: a client that calls
``/login`` first acts as that user for its later calls; one that does not is anonymous.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import timedelta
from typing import Any

import gradio as gr

from serving.models import LinkKind, LinkRole
from serving.services.images import ingest_image
from serving.services.reviews import export_ratings, rate_turn, review_queue
from serving.services.sessions import create_session, log_in
from serving.services.shares import create_share_link, fork_session, revoke_link
from serving.services.turns import job_view
from webapp.handlers.common import (
    UserFacingError,
    Web,
    ensured_state,
    to_actor,
    user_errors,
)
from webapp.handlers.share import share_url
from webapp.handlers.views import SessionData, TurnData, image_data, read_session
from webapp.regions import resolve_references
from webapp.render import UNTRAINED_MARKER

POLL_INTERVAL_S = 0.2


def _refuse(exc: BaseException) -> gr.Error:
    return gr.Error(str(exc), duration=None)


def _call(web: Web, fn: Any, /, **kwargs: Any) -> Any:
    try:
        return web.call(fn, **kwargs)
    except UserFacingError as exc:
        raise _refuse(exc) from None


def _json_arg(text: str | None, what: str) -> Any:
    if text is None or not str(text).strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise gr.Error(f"{what} is not valid JSON ({exc.msg} at character {exc.pos}).") from None


def turn_json(turn: TurnData) -> dict[str, Any]:
    return {
        "turn_id": turn.id,
        "index": turn.index,
        "question": turn.question,
        "regions": turn.regions,
        "answer": turn.answer,
        "checkpoint_id": turn.checkpoint_id,
        "untrained": bool(turn.checkpoint_id and UNTRAINED_MARKER in turn.checkpoint_id.lower()),
        "masks": [
            {
                "index": m.index,
                "rle": m.rle,
                "area_px": m.area_px,
                "bbox_xyxy_px": m.bbox_xyxy_px,
                "score": m.score,
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
    actor, state = ensured_state(web, state, session_hash)
    size = os.path.getsize(path)
    if size > web.settings.max_upload_bytes:
        raise gr.Error(
            f"The file is {size / 1e6:.1f} MB; the limit is "
            f"{web.settings.max_upload_bytes / 1e6:.1f} MB."
        )
    with open(path, "rb") as fh:
        data = fh.read()

    def body(db: Any) -> dict[str, Any]:
        image = ingest_image(
            db,
            store=web.platform.store,
            settings=web.settings,
            data=data,
            filename=os.path.basename(path),
            window=window or None,
            nifti_axis=int(2 if nifti_axis is None else nifti_axis),
            nifti_slice=None if nifti_slice is None or nifti_slice < 0 else int(nifti_slice),
        )
        session = create_session(db, actor=actor, image_id=image.id, title=title or "")
        info = image_data(image)
        return {
            "session_id": session.id,
            "image_id": info.id,
            "width_px": info.width_px,
            "height_px": info.height_px,
            "source_format": info.source_format,
            "notes": info.notes,
        }

    return state, _call(web, body)


def _job_json(web: Web, actor: Any, job_id: str) -> dict[str, Any]:
    def body(db: Any) -> dict[str, Any]:
        # Someone else's job is answered like a missing one.
        view = job_view(db, job_id=job_id, actor=actor)
        out: dict[str, Any] = {
            "job_id": view.id,
            "status": view.status.value,
            "position": view.position,
            "progress": view.progress,
            "phase": view.phase,
            "error": view.error,
            "session_id": view.session_id,
            "turn_index": view.turn_index,
        }
        if view.status.final:
            session = read_session(db, actor=actor, session_id=view.session_id)
            turn = next(t for t in session.turns if t.index == view.turn_index)
            out["turn"] = turn_json(turn)
        return out

    return _call(web, body)


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
    regions = _json_arg(regions_json, "regions_json") or []
    if not isinstance(regions, list) or not all(isinstance(item, dict) for item in regions):
        raise gr.Error(
            'regions_json must be a JSON list of regions like {"kind": "box", "xyxy_px": [...]}.'
        )
    for number, item in enumerate(regions, start=1):
        item["label"] = number  # "region N" means the N-th item of the list
    try:
        with user_errors():
            resolved = resolve_references(question or "", regions)
        view = await asyncio.to_thread(
            lambda: _ask(web, actor, (session_id or "").strip(), resolved)
        )
    except UserFacingError as exc:
        raise _refuse(exc) from None
    deadline = time.monotonic() + web.settings.job_time_limit_s + 30
    result = await asyncio.to_thread(_job_json, web, actor, view.id)
    while wait and result["status"] in ("queued", "running") and time.monotonic() < deadline:
        await asyncio.sleep(POLL_INTERVAL_S)
        result = await asyncio.to_thread(_job_json, web, actor, view.id)
    return state, result


def _ask(web: Web, actor: Any, session_id: str, resolved: Any) -> Any:
    with user_errors():
        return web.platform.ask(
            actor=actor, session_id=session_id, question=resolved.text, regions=resolved.regions
        )


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
    hours = None if expires_hours is None or expires_hours <= 0 else float(expires_hours)
    kind = LinkKind.klass if as_class else LinkKind.session

    def body(db: Any) -> dict[str, Any]:
        link, token = create_share_link(
            db,
            actor=actor,
            session_id=(session_id or "").strip(),
            role=LinkRole(role),
            kind=kind,
            expires_in=None if hours is None else timedelta(hours=hours),
        )
        return {
            "link_id": link.id,
            "token": token,
            "role": link.role.value,
            "kind": link.kind.value,
            "expires_at": link.expires_at.isoformat() if link.expires_at else None,
            "url": share_url(base_url, token, kind=link.kind.value),
        }

    return _call(web, body)


def fork(web: Web, token: str, state: Any, session_hash: str | None) -> tuple[Any, dict]:
    actor, state = ensured_state(web, state, session_hash)
    copy = _call(web, lambda db: fork_session(db, actor=actor, token=(token or "").strip()).id)
    return state, {"session_id": copy}


def revoke(web: Web, link_id: str, state: Any, session_hash: str | None) -> dict[str, Any]:
    actor, _ = ensured_state(web, state, session_hash)
    link = _call(web, lambda db: revoke_link(db, actor=actor, link_id=(link_id or "").strip()).id)
    return {"link_id": link, "revoked": True}


def review_items(web: Web, state: Any) -> dict[str, Any]:
    actor = to_actor(state)
    if actor is None:
        raise gr.Error("Log in with a reviewer account first (/login).")

    def body(db: Any) -> list[dict[str, Any]]:
        return [
            {
                "turn_id": t.id,
                "question": t.question,
                "answer": t.answer,
                "masks": len(t.masks),
                "checkpoint_id": t.checkpoint_id,
            }
            for t in review_queue(db, actor=actor, limit=100)
        ]

    return {"items": _call(web, body)}


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
        lambda db: (
            rate_turn(
                db,
                actor=actor,
                turn_id=(turn_id or "").strip(),
                text_score=int(text_score or 0),
                text_correct=correct,
                mask_verdicts=verdicts,
                comment=comment or "",
            ).id
        ),
    )
    return {"rating_id": rating, "turn_id": turn_id}


def export(web: Web, fmt: str, state: Any) -> str:
    actor = to_actor(state)
    if actor is None:
        raise gr.Error("Exports need a reviewer account; call /login first.")
    text = _call(web, export_ratings, actor=actor, fmt=(fmt or "csv").strip().lower())
    return web.download_path(f"medplib-ratings.{fmt}", text.encode())
