"""Named API endpoints of the review loop: mask corrections, their versions, agreement, and
the reviewed answers as a training corpus.

Same rules as `webapp.handlers.api`: refusals are one sentence (`gr.Error`), masks travel
as COCO RLE at the image's original size, and the caller acts as whoever `/login` made it.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from serving.services.corrections import (
    MaskVersionData,
    correct_mask,
    mask_index_of,
    mask_versions,
)
from serving.services.reviews import review_statistics
from webapp.handlers.api import _call, _json_arg, _refusals
from webapp.handlers.common import UserFacingError, Web, to_actor
from webapp.handlers.review_export import export_zip


def _mask_index(mask_number: float | None) -> int:
    with _refusals():
        return mask_index_of(mask_number)


def _version(v: MaskVersionData) -> dict[str, Any]:
    return {
        "version": v.version,
        "author": v.author,
        "area_px": v.area_px,
        "bbox_xyxy_px": v.bbox_xyxy_px,
        "created_at": v.created_at.isoformat() if v.created_at else None,
        "rle": v.rle,
    }


def _reviewer(state: Any, what: str) -> Any:
    actor = to_actor(state)
    if actor is None:
        raise gr.Error(f"{what} needs a reviewer account (or the session's owner); call /login.")
    return actor


def correct(
    web: Web, turn_id: str, mask_number: float | None, mask_rle_json: str, state: Any
) -> dict[str, Any]:
    """Save a corrected mask (COCO RLE JSON at the original size) as the mask's next version."""
    actor = _reviewer(state, "Correcting a mask")
    rle = _json_arg(mask_rle_json, "mask_rle_json")
    if rle is None:
        raise gr.Error('Send the corrected mask as mask_rle_json: {"size": [h, w], "counts": …}.')
    saved = _call(
        web,
        correct_mask,
        actor=actor,
        store=web.platform.store,
        turn_id=(turn_id or "").strip(),
        mask_index=_mask_index(mask_number),
        mask_rle=rle,
    )
    return {"turn_id": turn_id, "mask_number": int(mask_number or 0), **_version(saved)}


def versions(web: Web, turn_id: str, mask_number: float | None, state: Any) -> dict[str, Any]:
    """Every version of one mask, the model's (0) first."""
    actor = _reviewer(state, "Reading mask versions")
    found = _call(
        web,
        mask_versions,
        actor=actor,
        turn_id=(turn_id or "").strip(),
        mask_index=_mask_index(mask_number),
    )
    return {"turn_id": turn_id, "versions": [_version(v) for v in found]}


def statistics(web: Web, state: Any) -> dict[str, Any]:
    """Rating agreement (kappa), corrected-mask agreement (Dice / IoU) and the checkpoints."""
    actor = to_actor(state)
    if actor is None:
        raise gr.Error("Review statistics need a reviewer account; call /login first.")
    stats = _call(web, review_statistics, actor=actor)
    return {
        "ratings": stats.agreement,
        "masks": stats.masks,
        "checkpoints": stats.checkpoints,
        "mask_signals": stats.signals,
    }


def export_dataset(
    web: Web, class_id: str | None, since: str | None, min_rating: float | None, state: Any
) -> tuple[str, dict[str, Any]]:
    """The reviewed answers as a zipped MeCoVQA corpus, and what is in it."""
    try:
        made = export_zip(web, class_id, since, min_rating, state)
    except UserFacingError as exc:
        raise gr.Error(str(exc)) from None
    s = made.summary
    return made.path, {
        "items": s.items,
        "by_task": s.by_task,
        "corrected": s.corrected,
        "images": s.images,
        "reviewers": [
            {"name": r.display_name, "rated": r.rated, "corrected": r.corrected}
            for r in s.reviewers
        ],
    }
