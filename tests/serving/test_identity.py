"""Anonymous identities that cannot be taken over, logins kept in a cookie, and the same
answer for someone else's id as for an id that does not exist."""

from __future__ import annotations

from datetime import timedelta

import pytest

from serving.execution import run_job
from serving.models import LinkKind, LoginSession, Role, User
from serving.services.accounts import Actor, anonymous_actor, create_user, display_name
from serving.services.errors import NotFound, ServiceError
from serving.services.images import ingest_image
from serving.services.logins import (
    end_login,
    issue_login_code,
    login_actor,
    redeem_login_code,
)
from serving.services.reviews import rate_turn
from serving.services.sessions import (
    create_session,
    delete_session,
    get_session,
    last_session_id,
    list_sessions,
    log_in,
    remember_session,
)
from serving.services.shares import class_forks, create_share_link, fork_session, revoke_link
from serving.services.turns import cancel_job, job_view
from tests.serving.conftest import png_bytes

STUDENT_SECRET = "5f0c3e9a1b2d4c6e8f0a1b2c3d4e5f60"
MISSING_ID = "0" * 32


def _account(platform, name, role=Role.user):
    return platform.call(
        lambda db: Actor(
            user_id=create_user(db, username=name, password="password1", role=role).id, role=role
        )
    )


def _session(platform, owner, *, answered=True):
    def body(db):
        image = ingest_image(db, store=platform.store, settings=platform.settings, data=png_bytes())
        return create_session(db, actor=owner, image_id=image.id, title="case").id

    session_id = platform.call(body)
    view = platform.ask(actor=owner, session_id=session_id, question="what?", regions=[])
    if answered:
        run_job(view.id, ctx=platform.ctx)
    return session_id, view.id


def _message(platform, fn, **kwargs) -> str:
    with pytest.raises(ServiceError) as caught:
        platform.call(fn, **kwargs)
    return f"{type(caught.value).__name__}: {caught.value}"


def test_the_name_a_teacher_sees_does_not_open_the_students_work(sqlite_url, make_platform):
    """The takeover of the issue: the class overview's name presented as the browser key,
    and as the anonymous identity merged into a login; both must fail."""
    platform = make_platform(sqlite_url)
    teacher = _account(platform, "teacher", Role.instructor)
    mallory = _account(platform, "mallory")
    case, _ = _session(platform, teacher)
    link, token = platform.call(
        create_share_link, actor=teacher, session_id=case, kind=LinkKind.klass
    )
    student = platform.call(anonymous_actor, browser_secret=STUDENT_SECRET)
    fork = platform.call(fork_session, actor=student, token=token)
    platform.call(remember_session, actor=student, session_id=fork.id)

    def seen_by_teacher(db):
        forks = class_forks(db, actor=teacher, link_id=link.id)
        user = db.get(User, forks[0].owner_id)
        return display_name(user), user.username, user.browser_secret_sha256

    shown, username, stored = platform.call(seen_by_teacher)
    # Nothing the teacher (or the database) holds is the secret.
    assert STUDENT_SECRET not in (shown, username, stored)
    assert STUDENT_SECRET not in shown and STUDENT_SECRET not in username

    for guess in (shown, username, username.removeprefix("anon-"), stored):
        try:
            thief = platform.call(anonymous_actor, browser_secret=guess)
        except ServiceError:
            continue  # not even accepted as a key
        assert thief.user_id != student.user_id
        assert platform.call(list_sessions, actor=thief) == []
        with pytest.raises(NotFound):
            platform.call(get_session, actor=thief, session_id=fork.id)
        # Logging in "from" that identity moves nothing.
        done = platform.call(
            log_in, username="mallory", password="password1", anonymous_secret=guess
        )
        assert done is not None and done[1] == 0

    assert platform.call(list_sessions, actor=mallory) == []
    assert [s.id for s in platform.call(list_sessions, actor=student)] == [fork.id]
    assert platform.call(get_session, actor=student, session_id=fork.id).id == fork.id
    # The student's own browser (its secret) is still the same student.
    again = platform.call(anonymous_actor, browser_secret=STUDENT_SECRET)
    assert again.user_id == student.user_id


def test_login_moves_only_the_sessions_of_the_same_browser(sqlite_url, make_platform):
    platform = make_platform(sqlite_url)
    _account(platform, "ann")
    visitor = platform.call(anonymous_actor, browser_secret=STUDENT_SECRET)
    other = platform.call(anonymous_actor, browser_secret="f" * 32)
    mine, _ = _session(platform, visitor, answered=False)
    theirs, _ = _session(platform, other, answered=False)
    platform.call(remember_session, actor=visitor, session_id=mine)
    assert platform.call(log_in, username="ann", password="wrong password") is None
    actor, moved = platform.call(
        log_in, username="ann", password="password1", anonymous_secret=STUDENT_SECRET
    )
    assert moved == 1
    assert [s.id for s in platform.call(list_sessions, actor=actor)] == [mine]
    assert [s.id for s in platform.call(list_sessions, actor=other)] == [theirs]
    # The session on screen before logging in is the one a reload reopens.
    assert platform.call(last_session_id, actor=actor) == mine


def test_login_cookie_code_works_once_and_logout_ends_it(sqlite_url, make_platform):
    platform = make_platform(sqlite_url)
    ann = _account(platform, "ann", Role.reviewer)
    code = platform.call(issue_login_code, actor=ann)
    # A code is not itself a login, and it trades only once.
    assert platform.call(login_actor, token=code) is None
    token = platform.call(redeem_login_code, code=code)
    with pytest.raises(NotFound, match="log in again"):
        platform.call(redeem_login_code, code=code)
    assert platform.call(login_actor, token=token) == ann
    assert platform.call(lambda db: db.query(LoginSession).one().token_sha256) not in (token, code)
    assert platform.call(end_login, token=token) is True
    assert platform.call(login_actor, token=token) is None
    assert platform.call(end_login, token=token) is False
    with pytest.raises(ServiceError):
        platform.call(
            issue_login_code, actor=platform.call(anonymous_actor, browser_secret="a" * 32)
        )

    stale = platform.call(issue_login_code, actor=ann)

    def age(db):
        row = db.query(LoginSession).filter(LoginSession.redeemed.is_(False)).one()
        row.expires_at = row.created_at - timedelta(seconds=1)

    platform.call(age)
    with pytest.raises(NotFound):
        platform.call(redeem_login_code, code=stale)


def test_last_session_is_only_one_the_user_may_read(sqlite_url, make_platform):
    platform = make_platform(sqlite_url)
    ann, bob = _account(platform, "ann"), _account(platform, "bob")
    own, _ = _session(platform, ann, answered=False)
    foreign, _ = _session(platform, bob, answered=False)
    platform.call(remember_session, actor=ann, session_id=own)
    platform.call(remember_session, actor=ann, session_id=foreign)
    assert platform.call(last_session_id, actor=ann) == own
    platform.call(delete_session, actor=ann, session_id=own)
    assert platform.call(last_session_id, actor=ann) is None


# Existence oracles: another user's id and a random id get the same answer.


def _same_answer(platform, fn, *, real_id, id_name, **kwargs):
    mine = _message(platform, fn, **{id_name: real_id}, **kwargs)
    missing = _message(platform, fn, **{id_name: MISSING_ID}, **kwargs)
    assert mine == missing
    assert mine.startswith("NotFound: ")


def test_someone_elses_session_is_answered_like_a_missing_one(sqlite_url, make_platform):
    platform = make_platform(sqlite_url)
    owner, mallory = _account(platform, "owner"), _account(platform, "mallory")
    session_id, _ = _session(platform, owner)
    for fn in (get_session, delete_session):
        _same_answer(platform, fn, real_id=session_id, id_name="session_id", actor=mallory)
    assert platform.call(get_session, actor=owner, session_id=session_id).id == session_id


def test_someone_elses_link_is_answered_like_a_missing_one(sqlite_url, make_platform):
    platform = make_platform(sqlite_url)
    teacher = _account(platform, "teacher", Role.instructor)
    mallory = _account(platform, "mallory", Role.instructor)
    case, _ = _session(platform, teacher)
    link, _ = platform.call(create_share_link, actor=teacher, session_id=case)
    klass, _ = platform.call(create_share_link, actor=teacher, session_id=case, kind=LinkKind.klass)
    _same_answer(platform, revoke_link, real_id=link.id, id_name="link_id", actor=mallory)
    _same_answer(platform, class_forks, real_id=klass.id, id_name="link_id", actor=mallory)
    assert platform.call(lambda db: revoke_link(db, actor=teacher, link_id=link.id).revoked_at)


def test_someone_elses_job_is_answered_like_a_missing_one(sqlite_url, make_platform):
    platform = make_platform(sqlite_url)
    owner, mallory = _account(platform, "owner"), _account(platform, "mallory")
    _, job_id = _session(platform, owner, answered=False)
    _same_answer(platform, cancel_job, real_id=job_id, id_name="job_id", actor=mallory)
    _same_answer(platform, job_view, real_id=job_id, id_name="job_id", actor=mallory)
    assert platform.call(job_view, job_id=job_id, actor=owner).id == job_id


def test_reviewers_get_one_answer_for_missing_and_unfinished_turns(sqlite_url, make_platform):
    platform = make_platform(sqlite_url)
    owner, rita = _account(platform, "owner"), _account(platform, "rita", Role.reviewer)
    session_id, _ = _session(platform, owner, answered=False)
    turn_id = platform.call(
        lambda db: get_session(db, actor=owner, session_id=session_id).turns[0].id
    )
    kwargs = {"actor": rita, "text_score": 3, "text_correct": None, "mask_verdicts": []}
    _same_answer(platform, rate_turn, real_id=turn_id, id_name="turn_id", **kwargs)
