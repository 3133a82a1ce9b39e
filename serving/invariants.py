"""Consistency checks over the SQL record and the artefact store.

Used by the reliability tests after faults and bad input, and by operators
(`python -m serving.invariants`) after an incident. Returns problems; empty means sound.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.models import (
    ArenaMatch,
    ArenaVote,
    ChatSession,
    Image,
    Job,
    JobStatus,
    Mask,
    ShareLink,
    Turn,
    User,
)
from serving.store import ArtefactStore


def check_invariants(db: Session, *, store: ArtefactStore) -> list[str]:
    problems: list[str] = []
    users = set(db.scalars(select(User.id)))
    images = {i.id: i for i in db.scalars(select(Image))}
    sessions = {s.id: s for s in db.scalars(select(ChatSession))}
    turns = {t.id: t for t in db.scalars(select(Turn))}
    jobs = {j.turn_id: j for j in db.scalars(select(Job))}

    for image in images.values():
        for key in (image.original_key, image.display_key):
            if not store.exists(key):
                problems.append(f"image {image.id}: artefact {key} is missing")
    for s in sessions.values():
        if s.owner_id not in users:
            problems.append(f"session {s.id}: owner {s.owner_id} does not exist")
        if s.image_id not in images:
            problems.append(f"session {s.id}: image {s.image_id} does not exist")
    for t in turns.values():
        if t.session_id not in sessions:
            problems.append(f"turn {t.id}: session {t.session_id} does not exist")
        job = jobs.get(t.id)
        if t.copied:
            # Copied with its answer into a fork: never run here, so it has no job.
            if job is not None:
                problems.append(f"turn {t.id}: copied into a fork but has a job")
            if t.answer is None:
                problems.append(f"turn {t.id}: copied into a fork without its answer")
            source = turns.get(t.source_turn_id) if t.source_turn_id else None
            if source is not None and source.source_turn_id is not None:
                problems.append(f"turn {t.id}: points to a copy, not to the first answer")
            continue
        if t.source_turn_id is not None:
            problems.append(f"turn {t.id}: run here but points to a source answer")
        if job is None:
            problems.append(f"turn {t.id}: has no job")
            continue
        if (t.answer is not None) != (job.status is JobStatus.succeeded):
            problems.append(
                f"turn {t.id}: answer {'present' if t.answer is not None else 'missing'} "
                f"but job is {job.status.value}"
            )
    for job in jobs.values():
        if job.turn_id not in turns:
            problems.append(f"job {job.id}: turn {job.turn_id} does not exist")
        if job.status not in JobStatus:
            problems.append(f"job {job.id}: unknown status {job.status!r}")
        if job.status.final and job.finished_at is None:
            problems.append(f"job {job.id}: {job.status.value} without a finish time")
        if job.status is JobStatus.failed and not job.error:
            problems.append(f"job {job.id}: failed without a reason")
    for mask in db.scalars(select(Mask)):
        turn = turns.get(mask.turn_id)
        if turn is None:
            problems.append(f"mask {mask.id}: turn {mask.turn_id} does not exist")
        elif turn.answer is None:
            problems.append(f"mask {mask.id}: belongs to an unanswered turn")
        if not store.exists(mask.png_key):
            problems.append(f"mask {mask.id}: artefact {mask.png_key} is missing")
    for link in db.scalars(select(ShareLink)):
        if link.session_id not in sessions:
            problems.append(f"share link {link.id}: session does not exist")
    problems += _arena_problems(db, turns=turns, jobs=jobs)
    return problems


def _arena_problems(db: Session, *, turns: dict[str, Turn], jobs: dict[str, Job]) -> list[str]:
    """Each side is its own answer on the checkpoint it is shown as; votes are the player's."""
    problems: list[str] = []
    matches = {m.id: m for m in db.scalars(select(ArenaMatch))}
    for m in matches.values():
        if m.checkpoint_a == m.checkpoint_b or m.turn_a_id == m.turn_b_id:
            problems.append(f"arena match {m.id}: both sides are the same")
        for side, turn_id, name in (
            ("A", m.turn_a_id, m.checkpoint_a),
            ("B", m.turn_b_id, m.checkpoint_b),
        ):
            job = jobs.get(turn_id)
            if turn_id not in turns or job is None:
                problems.append(f"arena match {m.id}: side {side} has no answer or job")
            elif job.checkpoint != name:
                problems.append(
                    f"arena match {m.id}: side {side} is shown as {name} but ran on {job.checkpoint}"
                )
    for v in db.scalars(select(ArenaVote)):
        match = matches.get(v.match_id)
        if match is None:
            problems.append(f"arena vote {v.id}: match does not exist")
            continue
        if v.voter_id != match.started_by_id:
            problems.append(f"arena vote {v.id}: by someone the match was not shown to")
        sides = [jobs.get(match.turn_a_id), jobs.get(match.turn_b_id)]
        if any(job is None or job.status is not JobStatus.succeeded for job in sides):
            problems.append(f"arena vote {v.id}: on a match without both answers")
    return problems


def main() -> int:
    from serving.db import session_factory, transaction
    from serving.settings import load_settings_or_exit

    settings = load_settings_or_exit()
    with transaction(session_factory(settings.database_url)) as db:
        problems = check_invariants(db, store=ArtefactStore(settings.artefact_dir))
    for p in problems:
        print(p)
    print(f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
