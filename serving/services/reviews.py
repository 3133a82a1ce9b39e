"""Reviewing answers: a queue per reviewer, ratings, agreement and exports."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from serving.agreement import cohen_kappa, fleiss_kappa, mean_or_none
from serving.models import ChatSession, MaskVerdict, Rating, Role, Turn, User
from serving.services.accounts import Actor, require
from serving.services.arena import ARENA_USERNAME
from serving.services.corrections import correction_agreement
from serving.services.errors import InvalidInput, NotFound
from serving.services.validation import check_text, well_formed_id, whole_number
from serving.views import ImageData, TurnData, image_data, turn_data

MAX_COMMENT_CHARS = 5000


def review_queue(db: Session, *, actor: Actor, limit: int = 20) -> list[TurnData]:
    """Answers this reviewer has not rated yet, oldest first; each once, however many forks
    and class copies show it (copies point to the answer they came from)."""
    require(actor, Role.reviewer)
    rated = select(Rating.turn_id).where(Rating.reviewer_id == actor.user_id)
    turns = db.scalars(
        select(Turn)
        .where(
            Turn.answer.is_not(None),
            Turn.source_turn_id.is_(None),
            Turn.id.not_in(rated),
            Turn.session_id.not_in(_arena_sessions()),
        )
        .options(selectinload(Turn.masks), selectinload(Turn.job))
        .order_by(Turn.answered_at)
        .limit(limit)
    )
    return [turn_data(turn) for turn in turns]


@dataclass(frozen=True)
class ReviewCase:
    """An answer under review and the image it was given on."""

    turn: TurnData
    image: ImageData


def review_case(db: Session, *, actor: Actor, turn_id: str) -> ReviewCase:
    require(actor, Role.reviewer)
    turn = _answered_turn(db, turn_id)
    return ReviewCase(turn=turn_data(turn), image=image_data(turn.session.image))


def _arena_sessions() -> Any:
    """Sessions holding arena sides: judged by blind votes, never in the review queue (their
    checkpoint badge would name a side before the vote)."""
    return (
        select(ChatSession.id)
        .join(User, User.id == ChatSession.owner_id)
        .where(User.username == ARENA_USERNAME)
    )


def _answered_turn(db: Session, turn_id: str) -> Turn:
    """The answer under review: a copy in a fork or class session stands for its source."""
    turn = db.get(Turn, turn_id) if well_formed_id(turn_id) else None
    if turn is not None and turn.source_turn_id is not None:
        turn = db.get(Turn, turn.source_turn_id)
    if turn is not None and turn.session.owner.username == ARENA_USERNAME:
        turn = None
    if turn is None or turn.answer is None:
        raise NotFound("That answer does not exist or has not finished.")
    return turn


@dataclass(frozen=True)
class RatingData:
    id: str
    turn_id: str
    text_score: int
    text_correct: bool | None
    mask_verdicts: list[str]
    comment: str


def _rating_data(rating: Rating) -> RatingData:
    return RatingData(
        id=rating.id,
        turn_id=rating.turn_id,
        text_score=rating.text_score,
        text_correct=rating.text_correct,
        mask_verdicts=list(rating.mask_verdicts),
        comment=rating.comment,
    )


def rate_turn(
    db: Session,
    *,
    actor: Actor,
    turn_id: str,
    text_score: float,
    text_correct: bool | None,
    mask_verdicts: list[str],
    comment: str = "",
) -> RatingData:
    """Record (or replace) this reviewer's rating of one answer."""
    require(actor, Role.reviewer)
    comment = check_text(comment, what="comment", max_chars=MAX_COMMENT_CHARS)
    turn = _answered_turn(db, turn_id)
    try:
        score = whole_number(text_score, what="score", minimum=1, maximum=5)
    except InvalidInput:
        raise InvalidInput("Rate the answer text from 1 to 5.") from None
    if not isinstance(mask_verdicts, list) or len(mask_verdicts) != len(turn.masks):
        raise InvalidInput(f"This answer has {len(turn.masks)} mask(s); give one verdict for each.")
    allowed = {v.value for v in MaskVerdict}
    if any(v not in allowed for v in mask_verdicts):
        raise InvalidInput("Mask verdicts are good, partly or wrong.")
    values = {
        "text_score": score,
        "text_correct": text_correct,
        "mask_verdicts": list(mask_verdicts),
        "comment": comment,
    }
    turn_id = turn.id  # a copy's rating goes to the answer it came from
    mine = select(Rating).where(Rating.turn_id == turn_id, Rating.reviewer_id == actor.user_id)
    rating = db.scalar(mine)
    if rating is None:
        try:
            # A savepoint: the same reviewer's rating sent twice at once is one rating.
            with db.begin_nested():
                rating = Rating(turn_id=turn_id, reviewer_id=actor.user_id, **values)
                db.add(rating)
            return _rating_data(rating)
        except IntegrityError:
            rating = db.scalar(mine)
            if rating is None:
                raise
    for name, value in values.items():
        setattr(rating, name, value)
    db.flush()
    return _rating_data(rating)


def _ratings(db: Session) -> list[Rating]:
    return list(
        db.scalars(
            select(Rating)
            .options(selectinload(Rating.turn), selectinload(Rating.reviewer))
            .order_by(Rating.created_at)
        )
    )


@dataclass(frozen=True)
class ReviewStatistics:
    agreement: dict[str, Any]  # see `agreement_report`
    checkpoints: list[dict[str, Any]]  # see `checkpoint_table`
    masks: dict[str, Any]  # see `serving.services.corrections.correction_agreement`
    signals: list[dict[str, Any]]  # see `verdict_signals`


def review_statistics(db: Session, *, actor: Actor) -> ReviewStatistics:
    """Agreement between reviewers (ratings and corrected masks) and the per-checkpoint table,
    for reviewers only."""
    require(actor, Role.reviewer)
    return ReviewStatistics(
        agreement=agreement_report(db),
        checkpoints=checkpoint_table(db),
        masks=correction_agreement(db),
        signals=verdict_signals(db),
    )


def verdict_signals(db: Session) -> list[dict[str, Any]]:
    """Per mask verdict: the model's own numbers for the masks reviewers gave it.

    Does the model know when its mask is wrong? Each (rating, mask) pair counts once, so a
    mask rated by two reviewers counts under both verdicts. The mirror agreement is averaged
    over the masks that have one (a checkpoint with its mirror check on, answers since it was
    stored).
    """
    ratings = db.scalars(select(Rating).options(selectinload(Rating.turn).selectinload(Turn.masks)))
    scores: dict[str, list[float]] = defaultdict(list)
    agreements: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    for rating in ratings:
        by_index = {m.index: m for m in rating.turn.masks}
        for index, verdict in enumerate(rating.mask_verdicts):
            mask = by_index.get(index)
            if mask is None:
                continue
            counts[verdict] += 1
            if mask.score is not None:
                scores[verdict].append(mask.score)
            if mask.mirror_agreement is not None:
                agreements[verdict].append(mask.mirror_agreement)
    return [
        {
            "verdict": v.value,
            "masks_rated": counts[v.value],
            "mean_score": mean_or_none(scores[v.value]),
            "masks_checked": len(agreements[v.value]),
            "mean_mirror_agreement": mean_or_none(agreements[v.value]),
        }
        for v in MaskVerdict
    ]


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
