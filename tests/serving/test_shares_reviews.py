"""Share links, forks, classes and reviews through the services."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest

from serving.execution import run_job
from serving.invariants import check_invariants
from serving.models import LinkKind, LinkRole, Role, ShareLink
from serving.services.accounts import Actor, create_user
from serving.services.errors import Forbidden, InvalidInput, NotFound
from serving.services.images import ingest_image
from serving.services.reviews import (
    agreement_report,
    checkpoint_table,
    export_ratings,
    rate_turn,
    review_queue,
)
from serving.services.sessions import create_session, get_session
from serving.services.shares import (
    class_forks,
    create_share_link,
    fork_session,
    open_shared_session,
    resolve_link,
    revoke_link,
)
from tests.serving.conftest import png_bytes


def _user(platform, name, role=Role.user):
    return platform.call(
        lambda db: Actor(
            user_id=create_user(db, username=name, password="password1", role=role).id, role=role
        )
    )


def _answered_session(platform, owner, question="what is it?"):
    def body(db):
        image = ingest_image(db, store=platform.store, settings=platform.settings, data=png_bytes())
        return create_session(db, actor=owner, image_id=image.id, title="<b>case</b>").id

    session_id = platform.call(body)
    view = platform.ask(
        actor=owner,
        session_id=session_id,
        question=question,
        regions=[{"kind": "box", "xyxy_px": [1, 1, 10, 10]}],
    )
    run_job(view.id, ctx=platform.ctx)
    return session_id


def test_view_link_reads_but_cannot_write_or_fork(sqlite_url, make_platform):
    platform = make_platform(sqlite_url)
    owner, guest = _user(platform, "owner"), _user(platform, "guest")
    session_id = _answered_session(platform, owner)
    link, token = platform.call(create_share_link, actor=owner, session_id=session_id)
    assert len(token) >= 32 and link.token_sha256 != token
    shared = platform.call(open_shared_session, token=token)
    assert shared.id == session_id and shared.turns[0].answer
    with pytest.raises(Forbidden, match="view-only"):
        platform.call(fork_session, actor=guest, token=token)
    with pytest.raises(NotFound):
        platform.ask(actor=guest, session_id=session_id, question="q", regions=[])


def test_fork_copies_answers_and_masks_into_the_viewers_session(sqlite_url, make_platform):
    platform = make_platform(sqlite_url)
    owner, guest = _user(platform, "owner"), _user(platform, "guest")
    session_id = _answered_session(platform, owner)
    _, token = platform.call(
        create_share_link, actor=owner, session_id=session_id, role=LinkRole.fork
    )
    fork = platform.call(fork_session, actor=guest, token=token)
    mine = platform.call(get_session, actor=guest, session_id=fork.id)
    original = platform.call(get_session, actor=owner, session_id=session_id)
    assert mine.owner_id == guest.user_id and mine.forked_from_id == session_id
    assert [(t.question, t.answer) for t in mine.turns] == [
        (t.question, t.answer) for t in original.turns
    ]
    assert [m.rle for m in mine.turns[0].masks] == [m.rle for m in original.turns[0].masks]
    # The fork continues independently.
    view = platform.ask(actor=guest, session_id=fork.id, question="follow-up", regions=[])
    run_job(view.id, ctx=platform.ctx)
    assert len(platform.call(get_session, actor=owner, session_id=session_id).turns) == 1


def test_forks_and_class_copies_are_reviewed_as_the_answer_they_came_from(
    database_url, make_platform
):
    platform = make_platform(database_url)
    teacher = _user(platform, "teacher", Role.instructor)
    students = [_user(platform, f"student{k}") for k in range(3)]
    reviewer, other = _user(platform, "rev", Role.reviewer), _user(platform, "rev2", Role.reviewer)
    case = _answered_session(platform, teacher, "where is the lesion?")
    _, class_token = platform.call(
        create_share_link, actor=teacher, session_id=case, kind=LinkKind.klass
    )
    copies = [platform.call(fork_session, actor=s, token=class_token) for s in students]
    # A fork of a class copy still points to the teacher's answer.
    _, fork_token = platform.call(
        create_share_link, actor=students[0], session_id=copies[0].id, role=LinkRole.fork
    )
    refork = platform.call(fork_session, actor=teacher, token=fork_token)
    view = platform.ask(actor=students[1], session_id=copies[1].id, question="mine", regions=[])
    run_job(view.id, ctx=platform.ctx)

    source = platform.call(get_session, actor=teacher, session_id=case).turns[0]
    queue = platform.call(review_queue, actor=reviewer)
    # The teacher's answer once, the student's own question once: five sessions show the first.
    assert sorted(t.question for t in queue) == ["mine", "where is the lesion?"]
    assert next(t.id for t in queue if t.question != "mine") == source.id
    # Rating a copy (a reviewer following a class link) rates the answer it came from.
    copy_turn = platform.call(get_session, actor=teacher, session_id=refork.id).turns[0]
    assert copy_turn.id != source.id
    for who, turn_id, score in ((reviewer, copy_turn.id, 4), (other, source.id, 2)):
        rating = platform.call(
            rate_turn,
            actor=who,
            turn_id=turn_id,
            text_score=score,
            text_correct=True,
            mask_verdicts=["good"],
        )
        assert rating.turn_id == source.id
    assert [t.question for t in platform.call(review_queue, actor=reviewer)] == ["mine"]
    (row,) = platform.call(checkpoint_table)
    assert row["ratings"] == 2  # counted once per reviewer, not once per copy
    assert platform.call(agreement_report)["items_with_two_or_more"] == 1
    assert platform.call(lambda db: check_invariants(db, store=platform.store)) == []


def test_expired_revoked_and_unknown_links(sqlite_url, make_platform):
    platform = make_platform(sqlite_url)
    owner = _user(platform, "owner")
    session_id = _answered_session(platform, owner)
    _, expired = platform.call(
        create_share_link, actor=owner, session_id=session_id, expires_in=timedelta(seconds=1)
    )

    def backdate(db):
        for link in db.query(ShareLink):
            link.expires_at = link.created_at - timedelta(days=1)

    platform.call(backdate)
    with pytest.raises(InvalidInput, match="expired"):
        platform.call(resolve_link, token=expired)
    link, token = platform.call(create_share_link, actor=owner, session_id=session_id)
    platform.call(revoke_link, actor=owner, link_id=link.id)
    with pytest.raises(InvalidInput, match="revoked"):
        platform.call(resolve_link, token=token)
    for bad in ("nope", "x" * 43, "' OR 1=1 --" + "a" * 20):
        with pytest.raises(NotFound, match="not valid"):
            platform.call(resolve_link, token=bad)


def test_class_link_gives_each_student_one_fork_and_the_instructor_sees_all(
    sqlite_url, make_platform
):
    platform = make_platform(sqlite_url)
    teacher = _user(platform, "teacher", Role.instructor)
    student_a, student_b = _user(platform, "a"), _user(platform, "b")
    case = _answered_session(platform, teacher)
    own = _answered_session(platform, student_a)
    with pytest.raises(Forbidden, match="instructor"):
        platform.call(create_share_link, actor=student_a, session_id=own, kind=LinkKind.klass)
    link, token = platform.call(
        create_share_link, actor=teacher, session_id=case, kind=LinkKind.klass
    )
    fork_a = platform.call(fork_session, actor=student_a, token=token)
    again = platform.call(fork_session, actor=student_a, token=token)
    fork_b = platform.call(fork_session, actor=student_b, token=token)
    assert fork_a.id == again.id != fork_b.id
    view = platform.ask(actor=student_a, session_id=fork_a.id, question="my question", regions=[])
    run_job(view.id, ctx=platform.ctx)
    forks = platform.call(class_forks, actor=teacher, link_id=link.id)
    assert {f.id for f in forks} == {fork_a.id, fork_b.id}
    seen = platform.call(get_session, actor=teacher, session_id=fork_a.id)
    assert seen.turns[-1].answer == "noop answer to: my question"
    with pytest.raises(NotFound, match="does not exist"):  # not confirmed to non-owners
        platform.call(class_forks, actor=student_b, link_id=link.id)
    with pytest.raises(NotFound):  # students do not see each other's work
        platform.call(get_session, actor=student_b, session_id=fork_a.id)


def test_reviews_queue_rate_agreement_and_export(sqlite_url, make_platform):
    platform = make_platform(sqlite_url)
    owner = _user(platform, "owner")
    r1, r2 = _user(platform, "rev1", Role.reviewer), _user(platform, "rev2", Role.reviewer)
    _answered_session(platform, owner, "=cmd|' /C calc'!A0")
    _answered_session(platform, owner, "second")
    with pytest.raises(Forbidden):
        platform.call(review_queue, actor=owner)
    queue = platform.call(review_queue, actor=r1)
    assert len(queue) == 2 and all(len(t.masks) == 1 for t in queue)
    for reviewer, scores in ((r1, (5, 2)), (r2, (5, 3))):
        for turn, score in zip(queue, scores, strict=True):
            platform.call(
                rate_turn,
                actor=reviewer,
                turn_id=turn.id,
                text_score=score,
                text_correct=score >= 3,
                mask_verdicts=["good"],
                comment="ok",
            )
    assert platform.call(review_queue, actor=r1) == []
    with pytest.raises(InvalidInput, match="one verdict for each"):
        platform.call(
            rate_turn,
            actor=r1,
            turn_id=queue[0].id,
            text_score=3,
            text_correct=None,
            mask_verdicts=[],
        )
    with pytest.raises(InvalidInput, match="1 to 5"):
        platform.call(
            rate_turn,
            actor=r1,
            turn_id=queue[0].id,
            text_score=9,
            text_correct=None,
            mask_verdicts=["good"],
        )

    report = platform.call(agreement_report)
    assert report["items_with_two_or_more"] == 2
    (pair,) = report["cohen"]
    assert pair["items"] == 2 and pair["text_correct"] == pytest.approx(0.0)
    (row,) = platform.call(checkpoint_table)
    assert row["checkpoint"] == "noop" and row["ratings"] == 4
    assert row["mean_text_score"] == pytest.approx((5 + 2 + 5 + 3) / 4)
    assert row["masks_good"] == 1.0

    rows = list(csv.DictReader(io.StringIO(platform.call(export_ratings, actor=r1, fmt="csv"))))
    assert len(rows) == 4
    assert {r["question"] for r in rows} == {"'=cmd|' /C calc'!A0", "second"}
    lines = platform.call(export_ratings, actor=r2, fmt="jsonl").splitlines()
    assert [json.loads(line)["text_score"] for line in lines] == [5, 2, 5, 3]
    with pytest.raises(Forbidden):
        platform.call(export_ratings, actor=owner, fmt="csv")
