"""Reviewing answers: a queue per reviewer, ratings, agreement and exports."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from itertools import combinations
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from serving.agreement import cohen_kappa, fleiss_kappa
from serving.models import MaskVerdict, Rating, Role, Turn
from serving.services.accounts import Actor, require
from serving.services.errors import InvalidInput, NotFound

MAX_COMMENT_CHARS = 5000


def review_queue(db: Session, *, actor: Actor, limit: int = 20) -> list[Turn]:
    """Answered turns this reviewer has not rated yet, oldest first."""
    require(actor, Role.reviewer)
    rated = select(Rating.turn_id).where(Rating.reviewer_id == actor.user_id)
    return list(
        db.scalars(
            select(Turn)
            .where(Turn.answer.is_not(None), Turn.id.not_in(rated))
            .options(selectinload(Turn.masks))
            .order_by(Turn.answered_at)
            .limit(limit)
        )
    )


def rate_turn(
    db: Session,
    *,
    actor: Actor,
    turn_id: str,
    text_score: int,
    text_correct: bool | None,
    mask_verdicts: list[str],
    comment: str = "",
) -> Rating:
    """Record (or replace) this reviewer's rating of one answer."""
    require(actor, Role.reviewer)
    turn = db.get(Turn, turn_id)
    if turn is None or turn.answer is None:
        raise NotFound("That answer does not exist or has not finished.")
    if isinstance(text_score, bool) or not isinstance(text_score, int) or not 1 <= text_score <= 5:
        raise InvalidInput("Rate the answer text from 1 to 5.")
    if len(mask_verdicts) != len(turn.masks):
        raise InvalidInput(f"This answer has {len(turn.masks)} mask(s); give one verdict for each.")
    allowed = {v.value for v in MaskVerdict}
    if any(v not in allowed for v in mask_verdicts):
        raise InvalidInput("Mask verdicts are good, partly or wrong.")
    if len(comment) > MAX_COMMENT_CHARS:
        raise InvalidInput(f"Comments are at most {MAX_COMMENT_CHARS} characters.")
    rating = db.scalar(
        select(Rating).where(Rating.turn_id == turn_id, Rating.reviewer_id == actor.user_id)
    )
    if rating is None:
        rating = Rating(turn_id=turn_id, reviewer_id=actor.user_id)
        db.add(rating)
    rating.text_score = text_score
    rating.text_correct = text_correct
    rating.mask_verdicts = list(mask_verdicts)
    rating.comment = comment
    db.flush()
    return rating


def _ratings(db: Session) -> list[Rating]:
    return list(
        db.scalars(
            select(Rating)
            .options(selectinload(Rating.turn), selectinload(Rating.reviewer))
            .order_by(Rating.created_at)
        )
    )


def agreement_report(db: Session) -> dict[str, Any]:
    """Fleiss' kappa over all reviewers and Cohen's kappa per reviewer pair."""
    by_turn: dict[str, dict[str, Rating]] = defaultdict(dict)
    names: dict[str, str] = {}
    for r in _ratings(db):
        by_turn[r.turn_id][r.reviewer_id] = r
        names[r.reviewer_id] = r.reviewer.username
    report: dict[str, Any] = {"items_with_two_or_more": 0, "fleiss": {}, "cohen": []}
    shared = {t: rs for t, rs in by_turn.items() if len(rs) >= 2}
    report["items_with_two_or_more"] = len(shared)
    for name, label in (("text_score", _score), ("text_correct", _correct)):
        counts = []
        for rs in shared.values():
            c: dict[Any, int] = defaultdict(int)
            for r in rs.values():
                c[label(r)] += 1
            counts.append(c)
        report["fleiss"][name] = fleiss_kappa(counts)
    reviewers = sorted({rid for rs in by_turn.values() for rid in rs})
    for a, b in combinations(reviewers, 2):
        both = [rs for rs in by_turn.values() if a in rs and b in rs]
        if not both:
            continue
        report["cohen"].append(
            {
                "reviewers": [a, b],
                "names": [names[a], names[b]],
                "items": len(both),
                "text_score": cohen_kappa(
                    [_score(rs[a]) for rs in both], [_score(rs[b]) for rs in both]
                ),
                "text_correct": cohen_kappa(
                    [_correct(rs[a]) for rs in both], [_correct(rs[b]) for rs in both]
                ),
            }
        )
    return report


def _score(r: Rating) -> int:
    return r.text_score


def _correct(r: Rating) -> str:
    return "unsure" if r.text_correct is None else str(r.text_correct).lower()


def checkpoint_table(db: Session) -> list[dict[str, Any]]:
    """Per checkpoint: ratings, mean text score, share correct, mask verdict shares."""
    groups: dict[str, list[Rating]] = defaultdict(list)
    for r in _ratings(db):
        groups[r.turn.checkpoint_id or "unknown"].append(r)
    table = []
    for checkpoint, rs in sorted(groups.items()):
        verdicts = [v for r in rs for v in r.mask_verdicts]
        judged = [r.text_correct for r in rs if r.text_correct is not None]
        table.append(
            {
                "checkpoint": checkpoint,
                "ratings": len(rs),
                "mean_text_score": sum(r.text_score for r in rs) / len(rs),
                "share_correct": (sum(judged) / len(judged)) if judged else None,
                "masks_rated": len(verdicts),
                **{
                    f"masks_{v.value}": (
                        verdicts.count(v.value) / len(verdicts) if verdicts else None
                    )
                    for v in MaskVerdict
                },
            }
        )
    return table


EXPORT_FIELDS = (
    "rating_id",
    "turn_id",
    "session_id",
    "checkpoint",
    "reviewer",
    "question",
    "answer",
    "text_score",
    "text_correct",
    "mask_verdicts",
    "comment",
    "created_at",
)


def export_ratings(db: Session, *, actor: Actor, fmt: str = "csv") -> str:
    require(actor, Role.reviewer)
    if fmt not in ("csv", "jsonl"):
        raise InvalidInput("Export as csv or jsonl.")
    rows = [
        {
            "rating_id": r.id,
            "turn_id": r.turn_id,
            "session_id": r.turn.session_id,
            "checkpoint": r.turn.checkpoint_id,
            "reviewer": r.reviewer.username,
            "question": r.turn.question,
            "answer": r.turn.answer,
            "text_score": r.text_score,
            "text_correct": r.text_correct,
            "mask_verdicts": list(r.mask_verdicts),
            "comment": r.comment,
            "created_at": r.created_at.isoformat(),
        }
        for r in _ratings(db)
    ]
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    for row in rows:
        # Spreadsheets run cells starting with = + - @ as formulas: neutralise them.
        writer.writerow(
            {k: _csv_safe(";".join(v) if isinstance(v, list) else v) for k, v in row.items()}
        )
    return out.getvalue()


def _csv_safe(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
