"""Reviewed answers → a MeCoVQA training corpus, so that review improves the model.

An answer is exported when reviewers have vouched for it: a reviewer (or admin) corrected a
mask of it, or a rating accepts it. A session's owner may correct their own answers too, but
such versions are not exported: anyone, anonymous users included, can own a session, and
training data is what reviewers stand behind. Only answers run here count (a fork's or class
copy's answer is rated and corrected as the answer it came from). What is written, and
where, is described in `serving.services.dataset_corpus`:

- an answer with masks → a grounding record; each mask is its latest version corrected by a
  reviewer, or the model's where no reviewer corrected it; the question keeps its region
  prompts;
- an answer without masks whose question had region prompts → a region record;
- any other answer → a VQA record.

A rating accepts an answer when every mask verdict is "good" and the text is not judged
wrong (an answer with masks), or when the text is judged correct (one without); with
``min_rating`` when its text score is at least that instead, mask verdicts unread.

`export_dataset` is `select_for_export` then `write_export`. The two are apart so a caller
can end its database transaction before the files are written (SQLite holds its write lock
for a whole transaction).
"""

from __future__ import annotations

import secrets
import shutil
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import CompoundSelect, select
from sqlalchemy.orm import Session, selectinload

from serving.models import (
    ChatSession,
    LinkKind,
    Mask,
    MaskCorrection,
    Rating,
    Role,
    ShareLink,
    Turn,
    User,
)
from serving.services.accounts import Actor, require
from serving.services.dataset_card import ReviewerCredit, card_data, write_card
from serving.services.dataset_corpus import CorpusItem, problem, write_corpus
from serving.services.errors import InvalidInput, NotFound
from serving.services.validation import well_formed_id, whole_number
from serving.store import ArtefactStore

__all__ = [
    "ExportSelection",
    "ExportSummary",
    "ReviewerCredit",
    "export_dataset",
    "select_for_export",
    "write_export",
]


_REVIEWERS = (Role.reviewer, Role.admin)
# Ids per IN (...) list: far below SQLite's limit on bound parameters.
_CHUNK = 500


@dataclass(frozen=True)
class ExportSelection:
    """The answers to export, read out of the database (no rows: usable after it closes)."""

    items: tuple[CorpusItem, ...]
    reviewers: tuple[ReviewerCredit, ...]
    skipped: tuple[dict[str, str], ...]  # {"turn_id", "reason"}: selected but not writable
    criteria: dict[str, Any]  # the filters, as the data card records them


@dataclass(frozen=True)
class ExportSummary:
    out_dir: Path
    items: int  # answers exported
    by_task: dict[str, int]  # records per task ("vqa", "region", "grounding")
    corrected: int  # answers with at least one corrected mask
    images: int
    reviewers: tuple[ReviewerCredit, ...]

    def line(self) -> str:
        tasks = ", ".join(f"{task} {n}" for task, n in self.by_task.items())
        return (
            f"exported {self.items} reviewed answers ({tasks}; {self.corrected} corrected) "
            f"on {self.images} images by {len(self.reviewers)} reviewer(s) to {self.out_dir}"
        )


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def _accepts(rating: Rating, n_masks: int, min_rating: int | None) -> bool:
    if min_rating is not None:
        return rating.text_score >= min_rating
    if n_masks == 0:
        return rating.text_correct is True
    verdicts = list(rating.mask_verdicts or [])
    return (
        len(verdicts) == n_masks
        and all(v == "good" for v in verdicts)
        and rating.text_correct is not False
    )


def _class_scope(db: Session, link_id: str) -> CompoundSelect:
    """Ids of the answers of a class: the case's, the students' own and their copies' sources."""
    link = db.get(ShareLink, link_id) if well_formed_id(link_id) else None
    if link is None or link.kind is not LinkKind.klass:
        raise NotFound(f"No class link has the id {link_id!r}; copy it from the class overview.")
    forks = select(ChatSession.id).where(ChatSession.via_link_id == link.id)
    in_class = Turn.session_id.in_(forks) | (Turn.session_id == link.session_id)
    own = select(Turn.id).where(in_class, Turn.copied.is_(False))
    sources = select(Turn.source_turn_id).where(in_class, Turn.source_turn_id.is_not(None))
    return own.union(sources)


def _describe(criteria: dict[str, Any]) -> str:
    parts = [
        f"a rating with text score >= {criteria['min_rating']}"
        if criteria["min_rating"] is not None
        else "an accepting rating (masks all good, text judged correct)"
    ]
    if criteria["class_link_id"] is not None:
        parts.append(f"in class link {criteria['class_link_id']}")
    if criteria["since"] is not None:
        parts.append(f"rated or corrected since {criteria['since']}")
    return "a corrected mask or " + ", ".join(parts)


def select_for_export(
    db: Session,
    *,
    actor: Actor | None,
    class_link_id: str | None = None,
    since: datetime | None = None,
    min_rating: int | None = None,
) -> ExportSelection:
    """Which answers an export holds (see the module docstring); `actor` None is the operator.

    Raises `InvalidInput` when nothing matches, `Forbidden` for anyone but reviewers and admins.
    """
    if actor is not None:
        require(actor, Role.reviewer)
    if min_rating is not None:
        min_rating = whole_number(min_rating, what="minimum rating", minimum=1, maximum=5)
    criteria: dict[str, Any] = {
        "class_link_id": class_link_id,
        "since": _utc(since).isoformat() if since is not None else None,
        "min_rating": min_rating,
    }
    criteria["rule"] = _describe(criteria)
    reviewed = select(Rating.turn_id).union(
        select(Mask.turn_id).join(MaskCorrection, MaskCorrection.mask_id == Mask.id)
    )
    query = (
        select(Turn)
        .where(
            Turn.answer.is_not(None),
            Turn.copied.is_(False),
            Turn.source_turn_id.is_(None),
            Turn.id.in_(reviewed),
        )
        .options(
            selectinload(Turn.masks)
            .selectinload(Mask.corrections)
            .selectinload(MaskCorrection.author),
            selectinload(Turn.session).selectinload(ChatSession.image),
        )
        .order_by(Turn.answered_at, Turn.id)
    )
    if class_link_id is not None:
        query = query.where(Turn.id.in_(_class_scope(db, class_link_id)))
    turns = list(db.scalars(query))
    ratings: dict[str, list[Rating]] = defaultdict(list)
    for at in range(0, len(turns), _CHUNK):
        for rating in db.scalars(
            select(Rating)
            .where(Rating.turn_id.in_([t.id for t in turns[at : at + _CHUNK]]))
            .options(selectinload(Rating.reviewer))
            .order_by(Rating.created_at)
        ):
            ratings[rating.turn_id].append(rating)
    start = _utc(since) if since is not None else None
    items: list[CorpusItem] = []
    skipped: list[dict[str, str]] = []
    credit: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    people: dict[str, User] = {}
    for turn in turns:
        versions = [_reviewed(m) for m in turn.masks]
        accepting = [r for r in ratings[turn.id] if _accepts(r, len(turn.masks), min_rating)]
        moments = [r.created_at for r in accepting]
        moments += [c.created_at for mine in versions for c in mine]
        if start is not None:
            moments = [m for m in moments if _utc(m) >= start]
        if not moments:
            continue
        item = _item(turn, versions)
        reason = problem(item)
        if reason is not None:
            skipped.append({"turn_id": turn.id, "reason": reason})
            continue
        items.append(item)
        for r in ratings[turn.id]:
            people[r.reviewer_id] = r.reviewer
            credit[r.reviewer_id]["rated"].add(turn.id)
        for mine in versions:
            if mine and mine[-1].author is not None:
                people[mine[-1].author.id] = mine[-1].author
                credit[mine[-1].author.id]["corrected"].add(turn.id)
    if not items:
        unwritable = "".join(f"; turn {s['turn_id']}: {s['reason']}" for s in skipped[:3])
        raise InvalidInput(
            f"Nothing to export: no reviewed answers match ({criteria['rule']}){unwritable}."
        )
    return ExportSelection(
        items=tuple(items),
        reviewers=_credits(people, credit),
        skipped=tuple(skipped),
        criteria=criteria,
    )


def _reviewed(mask: Mask) -> list[MaskCorrection]:
    """A mask's versions corrected by reviewers or admins, oldest first (as loaded)."""
    return [c for c in mask.corrections if c.author is not None and c.author.role in _REVIEWERS]


def _item(turn: Turn, versions: list[list[MaskCorrection]]) -> CorpusItem:
    image = turn.session.image
    chosen = [mine[-1].rle if mine else m.rle for m, mine in zip(turn.masks, versions, strict=True)]
    return CorpusItem(
        turn_id=turn.id,
        image_id=image.id,
        display_key=image.display_key,
        modality_hint=image.modality,
        height_px=image.height_px,
        width_px=image.width_px,
        question=turn.question,
        answer=turn.answer or "",
        raw_answer=turn.raw_answer,
        regions=[dict(r) for r in turn.regions or []],
        masks_rle=tuple(dict(rle) for rle in chosen),
        corrected=any(versions),
        checkpoint_id=turn.checkpoint_id,
    )


def _credits(
    people: dict[str, User], credit: dict[str, dict[str, set[str]]]
) -> tuple[ReviewerCredit, ...]:
    out = [
        ReviewerCredit(
            username=people[uid].username,
            display_name=people[uid].display_name or people[uid].username,
            items=len(done["rated"] | done["corrected"]),
            rated=len(done["rated"]),
            corrected=len(done["corrected"]),
        )
        for uid, done in credit.items()
    ]
    return tuple(sorted(out, key=lambda r: r.username))


def parse_since(text: str) -> datetime:
    """A date or an ISO 8601 time; without a zone it is UTC. ValueError says what is wrong."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a date; use YYYY-MM-DD or an ISO 8601 time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _check_out(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInput(f"{out_dir} exists and is not a folder; choose a new or empty folder.")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise InvalidInput(f"{out_dir} is not empty; choose a new or empty folder.")


def write_export(
    selection: ExportSelection, *, store: ArtefactStore, out_dir: Path
) -> ExportSummary:
    """Write the corpus into a hidden sibling folder, then rename it to `out_dir`: a failure
    leaves no half-written corpus behind, and `out_dir` must be new or empty."""
    out_dir = Path(out_dir)
    _check_out(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = out_dir.parent / f".{out_dir.name}.export-{secrets.token_hex(4)}"
    work.mkdir()
    try:
        try:
            counts = write_corpus(selection.items, store=store, out=work)
        except (KeyError, FileNotFoundError) as exc:
            raise NotFound(
                f"An exported answer's image is missing from the artefact store ({exc}); "
                "nothing was exported."
            ) from None
        data = card_data(
            selection=selection.criteria,
            items=selection.items,
            counts=counts,
            reviewers=selection.reviewers,
            skipped=selection.skipped,
        )
        write_card(work, data)
        work.replace(out_dir)  # atomic; refused if `out_dir` filled up meanwhile
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ExportSummary(
        out_dir=out_dir,
        items=data["items"],
        by_task=dict(counts.records),
        corrected=data["corrected"],
        images=counts.images,
        reviewers=selection.reviewers,
    )


def export_dataset(
    db: Session,
    *,
    store: ArtefactStore,
    out_dir: Path,
    actor: Actor | None,
    class_link_id: str | None = None,
    since: datetime | None = None,
    min_rating: int | None = None,
) -> ExportSummary:
    """Export reviewed answers to `out_dir` as a MeCoVQA corpus (see the module docstring).

    `actor` None is the operator's command line (full access); otherwise reviewers and admins
    only. `since`: only answers rated (accepting) or corrected at or after it. `class_link_id`:
    only the answers of that class link. Raises `InvalidInput` with "Nothing to export: ..."
    and writes nothing when no answer matches.
    """
    if actor is not None:
        require(actor, Role.reviewer)
    _check_out(Path(out_dir))  # refuse before reading the database
    selection = select_for_export(
        db, actor=actor, class_link_id=class_link_id, since=since, min_rating=min_rating
    )
    return write_export(selection, store=store, out_dir=out_dir)
