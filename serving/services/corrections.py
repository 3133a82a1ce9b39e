"""Corrected masks: versions of a returned mask, and how far reviewers' corrections agree.

The model's mask is version 0 and never changes. Each save adds the next version with its author
and time, so a teaching session can show what the model returned and every correction of it.
Reviewers correct the answer under review (a copy in a fork stands for the answer it came from,
as in the review queue); a session's owner corrects the masks of their own session.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from medplib.masks import decode_rle, mask_area, mask_bbox_xyxy_px, mask_to_png_bytes
from serving.agreement import mask_agreement
from serving.models import Mask, MaskCorrection, Role, Turn, User
from serving.services.accounts import Actor
from serving.services.errors import InvalidInput, NotFound
from serving.services.validation import well_formed_id, whole_number
from serving.store import ArtefactStore


@dataclass(frozen=True)
class MaskVersionData:
    """One version of a returned mask: 0 is the model's, 1, 2, ... corrections."""

    mask_id: str
    version: int
    author: str  # "model" for version 0
    rle: dict[str, Any]  # COCO RLE at the image's original size
    area_px: int
    bbox_xyxy_px: list[int] | None
    created_at: datetime | None


def mask_index_of(mask_number: Any) -> int:
    """The 0-based index of a client's 1-based mask number (1: the answer's first mask).

    Pages and API clients send numbers from number fields, so 2.0 is 2 while 2.5, NaN and
    values below 1 are refused; whether the answer has that many masks is checked on use.
    """
    if mask_number is None:
        raise InvalidInput("Choose which mask to correct (1 is the answer's first).")
    return whole_number(mask_number, what="mask number", minimum=1) - 1


def _editable_mask(db: Session, *, actor: Actor, turn_id: str, mask_index: int) -> Mask:
    """The mask `actor` may correct; NotFound (not Forbidden) so nothing is confirmed to others."""
    turn = db.get(Turn, turn_id) if well_formed_id(turn_id) else None
    if turn is not None and actor.has(Role.reviewer) and turn.source_turn_id is not None:
        turn = db.get(Turn, turn.source_turn_id)
    allowed = turn is not None and (
        actor.has(Role.reviewer) or turn.session.owner_id == actor.user_id
    )
    if turn is None or not allowed or turn.answer is None:
        raise NotFound("That answer does not exist or has not finished.")
    if isinstance(mask_index, bool) or not isinstance(mask_index, int):
        raise InvalidInput("Choose which mask of the answer to correct.")
    mask = next((m for m in turn.masks if m.index == mask_index), None)
    if mask is None:
        count = len(turn.masks)
        raise InvalidInput(
            f"This answer has {count} mask(s); there is no mask {mask_index + 1}."
            if count
            else "This answer has no mask to correct."
        )
    return mask


def _decoded(mask_rle: Any, *, height_px: int, width_px: int) -> np.ndarray:
    """The corrected mask as bool (H, W), checked against the image size before decoding."""
    if not isinstance(mask_rle, dict) or "size" not in mask_rle or "counts" not in mask_rle:
        raise InvalidInput("Send the corrected mask as COCO RLE: {'size': [h, w], 'counts': ...}.")
    size = mask_rle["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(type(v) is int for v in size)):
        raise InvalidInput("The corrected mask's size must be [height, width] in pixels.")
    if size != [height_px, width_px]:
        raise InvalidInput(
            f"The corrected mask is {size[0]} × {size[1]} pixels; the image is "
            f"{height_px} × {width_px}. Draw it on the image as shown."
        )
    try:
        mask = decode_rle(mask_rle)  # (H, W) bool
    except (ValueError, TypeError):
        raise InvalidInput("The corrected mask could not be read; draw it again.") from None
    if not mask.any():
        raise InvalidInput(
            "The corrected mask is empty. Draw the structure, or rate the mask 'wrong' instead."
        )
    return mask


def correct_mask(
    db: Session,
    *,
    actor: Actor,
    store: ArtefactStore,
    turn_id: str,
    mask_index: int,
    mask_rle: Any,
) -> MaskVersionData:
    """Save a corrected mask as the next version; the model's mask and earlier ones stay."""
    mask = _editable_mask(db, actor=actor, turn_id=turn_id, mask_index=mask_index)
    image = mask.turn.session.image
    binary = _decoded(mask_rle, height_px=image.height_px, width_px=image.width_px)
    bbox = mask_bbox_xyxy_px(binary)
    values = {
        "author_id": actor.user_id,
        "rle": mask_rle,
        "png_key": store.put(mask_to_png_bytes(binary), kind="masks", suffix=".png"),
        "area_px": mask_area(binary),
        "bbox_xyxy_px": list(bbox) if bbox else None,
    }
    for _ in range(3):  # two reviewers saving the same mask at once take the next two versions
        latest = db.scalar(
            select(func.max(MaskCorrection.version)).where(MaskCorrection.mask_id == mask.id)
        )
        try:
            with db.begin_nested():
                row = MaskCorrection(mask_id=mask.id, version=(latest or 0) + 1, **values)
                db.add(row)
            author = db.get(User, actor.user_id)
            return _version(row, username=author.username if author else None)
        except IntegrityError:
            continue
    raise InvalidInput("The mask was being corrected by others at the same time; save it again.")


def _version(row: MaskCorrection, *, username: str | None) -> MaskVersionData:
    return MaskVersionData(
        mask_id=row.mask_id,
        version=row.version,
        author=username or "deleted user",
        rle=dict(row.rle),
        area_px=row.area_px,
        bbox_xyxy_px=list(row.bbox_xyxy_px) if row.bbox_xyxy_px else None,
        created_at=row.created_at,
    )


def mask_versions(
    db: Session, *, actor: Actor, turn_id: str, mask_index: int
) -> list[MaskVersionData]:
    """Every version of one mask, oldest first: the model's, then each correction."""
    mask = _editable_mask(db, actor=actor, turn_id=turn_id, mask_index=mask_index)
    model = MaskVersionData(
        mask_id=mask.id,
        version=0,
        author="model",
        rle=dict(mask.rle),
        area_px=mask.area_px,
        bbox_xyxy_px=list(mask.bbox_xyxy_px) if mask.bbox_xyxy_px else None,
        created_at=mask.turn.answered_at,
    )
    return [
        model,
        *(_version(c, username=c.author.username if c.author else None) for c in mask.corrections),
    ]


def correction_agreement(db: Session) -> dict[str, Any]:
    """Pairwise Dice and IoU between reviewers' latest corrections of the same mask.

    Per answer mask (rows), per reviewer pair and overall (`serving.agreement.mask_agreement`),
    with reviewers named in alphabetical order; ``corrected_masks`` counts masks corrected at
    least once.
    """
    rows = db.scalars(
        select(MaskCorrection)
        .options(selectinload(MaskCorrection.author))
        .order_by(MaskCorrection.mask_id, MaskCorrection.version)
    )
    latest: dict[Hashable, dict[str, np.ndarray]] = defaultdict(dict)
    names: dict[str, str] = {}
    masks: set[str] = set()
    for row in rows:
        masks.add(row.mask_id)
        if row.author is None or row.author.role not in (Role.reviewer, Role.admin):
            continue
        names[row.author.id] = row.author.username
        latest[row.mask_id][row.author.id] = decode_rle(row.rle)  # later versions replace
    report = mask_agreement(latest)
    return {
        "corrected_masks": len(masks),
        "rows": [
            {
                "mask_id": r["item"],
                "names": sorted(names[reviewer] for reviewer in r["reviewers"]),
                "dice": r["dice"],
                "iou": r["iou"],
            }
            for r in report["rows"]
        ],
        "by_pair": sorted(
            (
                {"names": sorted((names[a], names[b])), **values}
                for (a, b), values in report["by_pair"].items()
            ),
            key=lambda row: row["names"],
        ),
        "overall": report["overall"],
    }
