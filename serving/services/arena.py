"""The arena: one question answered blind by two checkpoints, one vote, a leaderboard.

Each side is an ordinary turn with its job, alone in a session owned by the arena's system
user: runners, the watchdog and the invariants treat it like any answer, and no player can
open it (and read which checkpoint answered) before voting. Which checkpoint is shown as A
is drawn at random per match and stored; only the player the match was shown to may vote,
once. Scores are those of `serving.arena_scores`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medplib.answer_text import answer_with_mask_marks
from serving import arena_scores
from serving.models import (
    ArenaChoice,
    ArenaMatch,
    ArenaVote,
    ChatSession,
    Image,
    Job,
    JobStatus,
    Turn,
    User,
)
from serving.services.accounts import Actor
from serving.services.checkpoints import checkpoint_choices, known_checkpoint
from serving.services.errors import InvalidInput, NotFound
from serving.services.sessions import validate_regions
from serving.services.turns import check_rate, clean_question
from serving.services.validation import well_formed_id
from serving.settings import Settings
from serving.views import ImageData, MaskData, image_data, turn_data

# Not a name `create_user` accepts, so no person can hold (or log in as) the arena's user.
ARENA_USERNAME = "(arena)"
SIDES = ("A", "B")
# One sentence for "not there" and "shown to someone else": an id reveals nothing.
_NO_MATCH = "That match does not exist, or it was shown to someone else."


@dataclass(frozen=True)
class MatchStarted:
    match_id: str
    job_ids: tuple[str, str]  # side A's job, then side B's


@dataclass(frozen=True)
class SideView:
    """One side as the player sees it: the answer, never who gave it."""

    label: str  # "A" or "B"
    status: JobStatus
    answer: str | None
    masks: list[MaskData]
    error: str | None
    progress: float
    raw_answer: str | None = None  # as decoded, <SEG> tokens kept

    @property
    def answer_with_marks(self) -> str | None:
        """The answer as pages show it: "[mask k]" where the k-th mask was produced."""
        return None if self.answer is None else answer_with_mask_marks(self.answer, self.raw_answer)


@dataclass(frozen=True)
class MatchView:
    id: str
    question: str
    regions: list[dict[str, Any]]
    image: ImageData
    sides: tuple[SideView, SideView]
    vote: ArenaChoice | None  # this player's vote, once given
    # Revealed once voted: the checkpoint names of A and B, and what each reported itself as.
    names: tuple[str, str] | None = None
    answered_by: tuple[str | None, str | None] | None = None

    @property
    def finished(self) -> bool:
        return all(side.status.final for side in self.sides)


def start_match(
    db: Session,
    *,
    actor: Actor,
    image_id: str,
    question: Any,
    settings: Settings,
    runner: str,
    regions: Any = None,
    checkpoints: Sequence[str] | None = None,
    rng: random.Random | None = None,
) -> MatchStarted:
    """Queue the question on two of the arena's checkpoints (``checkpoints``, or two drawn
    at random), the one shown as A drawn at random. The caller commits, then hands both job
    ids to the runner."""
    image = db.get(Image, image_id) if well_formed_id(image_id) else None
    if image is None:
        raise NotFound("That image does not exist; upload it again.")
    text = clean_question(question, max_chars=settings.max_question_chars)
    doc = validate_regions(regions, image=image, max_regions=settings.max_regions)
    pair = _pair(db, settings=settings, checkpoints=checkpoints, rng=rng or random.SystemRandom())
    check_rate(
        db,
        actor=actor,
        per_minute=settings.anon_jobs_per_minute,
        per_address_per_minute=settings.anon_jobs_per_address_per_minute,
    )
    owner_id = _arena_user_id(db)
    turns, jobs = [], []
    for name in pair:
        session = ChatSession(owner_id=owner_id, image_id=image.id, title="Arena", regions=doc)
        turn = Turn(session=session, index=0, question=text, regions=doc)
        job = Job(turn=turn, submitted_by_id=actor.user_id, runner=runner, checkpoint=name)
        db.add_all([session, turn, job])
        turns.append(turn)
        jobs.append(job)
    db.flush()
    match = ArenaMatch(
        started_by_id=actor.user_id,
        image_id=image.id,
        question=text,
        regions=doc,
        checkpoint_a=pair[0],
        checkpoint_b=pair[1],
        turn_a_id=turns[0].id,
        turn_b_id=turns[1].id,
    )
    db.add(match)
    db.flush()
    return MatchStarted(match_id=match.id, job_ids=(jobs[0].id, jobs[1].id))


def _pair(
    db: Session, *, settings: Settings, checkpoints: Sequence[str] | None, rng: random.Random
) -> tuple[str, str]:
    arena = checkpoint_choices(db, settings=settings).arena
    if checkpoints is None:
        if len(arena) < 2:
            raise InvalidInput(
                f"The arena needs two checkpoints; this deployment has only {arena[0]!r}. "
                "Name more in MEDPLIB_CHECKPOINTS."
            )
        first, second = rng.sample(arena, 2)  # a random pair in a random order
        return first, second
    if isinstance(checkpoints, str) or len(checkpoints) != 2:
        raise InvalidInput("Name two checkpoints for the match, or none to draw two.")
    names = [known_checkpoint(name, settings=settings) for name in checkpoints]
    if names[0] == names[1]:
        raise InvalidInput("A match needs two different checkpoints.")
    for name in names:
        if name not in arena:
            raise InvalidInput(f"{name!r} is not in the arena; it has {', '.join(arena)}.")
    rng.shuffle(names)
    return names[0], names[1]


def _arena_user_id(db: Session) -> str:
    found = db.scalar(select(User.id).where(User.username == ARENA_USERNAME))
    if found is not None:
        return found
    user = User(username=ARENA_USERNAME, password_hash=None, display_name="Arena")
    try:
        # A savepoint: two first matches at once make one arena user.
        with db.begin_nested():
            db.add(user)
        return user.id
    except IntegrityError:
        found = db.scalar(select(User.id).where(User.username == ARENA_USERNAME))
        assert found is not None
        return found


def _shown_match(db: Session, *, actor: Actor, match_id: str, lock: bool = False) -> ArenaMatch:
    match = db.get(ArenaMatch, match_id, with_for_update=lock) if well_formed_id(match_id) else None
    if match is None or match.started_by_id != actor.user_id:
        raise NotFound(_NO_MATCH)
    return match


def _my_vote(db: Session, *, match_id: str, actor: Actor) -> ArenaVote | None:
    return db.scalar(
        select(ArenaVote).where(ArenaVote.match_id == match_id, ArenaVote.voter_id == actor.user_id)
    )


def _side(label: str, turn: Turn) -> SideView:
    data = turn_data(turn)
    job = turn.job
    return SideView(
        label=label,
        status=job.status,
        answer=data.answer,
        masks=data.masks,
        error=job.error,
        progress=job.progress,
        raw_answer=data.raw_answer,
    )


def match_view(db: Session, *, actor: Actor, match_id: str) -> MatchView:
    """The match as its player sees it: A's and B's answers and masks; names once voted."""
    match = _shown_match(db, actor=actor, match_id=match_id)
    vote = _my_vote(db, match_id=match.id, actor=actor)
    revealed = vote is not None
    return MatchView(
        id=match.id,
        question=match.question,
        regions=list(match.regions or []),
        image=image_data(match.image),
        sides=(_side("A", match.turn_a), _side("B", match.turn_b)),
        vote=vote.choice if vote is not None else None,
        names=(match.checkpoint_a, match.checkpoint_b) if revealed else None,
        answered_by=(match.turn_a.checkpoint_id, match.turn_b.checkpoint_id) if revealed else None,
    )


def vote(db: Session, *, actor: Actor, match_id: str, choice: Any) -> MatchView:
    """Record the player's one vote on a match they were shown; then the names are shown."""
    try:
        picked = ArenaChoice(choice)
    except (ValueError, TypeError):
        raise InvalidInput("Vote a (A is better), b, tie or both_bad.") from None
    match = _shown_match(db, actor=actor, match_id=match_id, lock=True)
    _check_votable(db, match=match, actor=actor)
    try:
        # A savepoint: the same vote sent twice at once is stored once, the second refused.
        with db.begin_nested():
            db.add(ArenaVote(match_id=match.id, voter_id=actor.user_id, choice=picked))
    except IntegrityError:
        _check_votable(db, match=match, actor=actor)
        raise
    return match_view(db, actor=actor, match_id=match.id)


def _check_votable(db: Session, *, match: ArenaMatch, actor: Actor) -> None:
    earlier = _my_vote(db, match_id=match.id, actor=actor)
    if earlier is not None:
        raise InvalidInput(
            f"You already voted on this match ({_said(earlier.choice)}); a vote cannot be changed."
        )
    for label, turn in zip(SIDES, (match.turn_a, match.turn_b), strict=True):
        status = turn.job.status
        if not status.final:
            raise InvalidInput("Both answers must be in before you vote; wait a moment.")
        if status is not JobStatus.succeeded:
            raise InvalidInput(
                f"Side {label} did not answer ({turn.job.error or status.value}), so this match "
                "cannot be judged; start another."
            )


def _said(choice: ArenaChoice) -> str:
    return {"a": "A is better", "b": "B is better", "tie": "a tie", "both_bad": "both bad"}[
        choice.value
    ]


@dataclass(frozen=True)
class Leaderboard:
    rows: list[dict[str, Any]]  # best first; see `arena_scores.leaderboard`
    matrix: dict[str, dict[str, float]]  # matrix[x][y]: how often x beat y
    votes: int


def leaderboard(db: Session, *, rounds: int = 1000, seed: int = 0) -> Leaderboard:
    """Bradley–Terry scores with bootstrap 95 % intervals, and the win matrix, over every vote."""
    votes = [
        (a, b, choice.value)
        for a, b, choice in db.execute(
            select(ArenaMatch.checkpoint_a, ArenaMatch.checkpoint_b, ArenaVote.choice)
            .join(ArenaVote, ArenaVote.match_id == ArenaMatch.id)
            .order_by(ArenaVote.created_at, ArenaVote.id)
        )
    ]
    if not votes:
        return Leaderboard(rows=[], matrix={}, votes=0)
    return Leaderboard(
        rows=arena_scores.leaderboard(votes, rounds=rounds, seed=seed),
        matrix=arena_scores.win_matrix(votes),
        votes=len(votes),
    )
