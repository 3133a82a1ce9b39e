"""Clean errors: input no field may hold is refused in one sentence, integrity races end in
words, and no message shows SQL, file paths or tracebacks.

Every text field and id of the services gets a NUL byte and a lone surrogate, on SQLite and
on PostgreSQL (whose text type refuses NUL outright); numbers get NaN and Infinity, at the
services and through HTTP; concurrent asks and first page-loads race on PostgreSQL. The
reliability conftest scans every refusal raised here for internals.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import ValidationError
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from serving.execution import run_job
from serving.invariants import check_invariants
from serving.models import Job, Rating, Role, User
from serving.platform import Platform, build_platform
from serving.predictors import NoopPredictor, PredictorHolder
from serving.services.accounts import Actor, anonymous_actor, create_user
from serving.services.errors import InvalidInput, ServiceError
from serving.services.images import ingest_image
from serving.services.logins import redeem_login_code
from serving.services.reviews import rate_turn
from serving.services.sessions import create_session, get_session, log_in, rename_session
from serving.services.shares import expiry_from_hours, open_shared_session, revoke_link
from serving.services.turns import job_view
from serving.services.validation import volume_choice
from serving.settings import Settings
from tests.conftest import PG_ADMIN_URL, require_service
from tests.reliability.live import Live, live_app
from tests.reliability.messages import leaks
from tests.serving.conftest import migrate, png_bytes
from webapp.edge import NOT_FINITE

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

STILL_ANSWERING = "The previous question is still being answered"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_url(request, tmp_path_factory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('clean') / 'db.sqlite'}"
        return
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"medplib_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        from serving.db import engine_for

        engine_for.cache_clear()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class Seed:
    """An owner with an answered session and a share link, and a reviewer."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

        def body(db: Any) -> tuple[Actor, Actor, str]:
            owner = create_user(db, username="owner", password="password1", role=Role.user)
            reviewer = create_user(db, username="rev", password="password1", role=Role.reviewer)
            image = ingest_image(
                db, store=platform.store, settings=platform.settings, data=png_bytes()
            )
            session = create_session(db, actor=Actor(user_id=owner.id), image_id=image.id)
            return (
                Actor(user_id=owner.id),
                Actor(user_id=reviewer.id, role=Role.reviewer),
                session.id,
            )

        self.owner, self.reviewer, self.session_id = platform.call(body)
        view = platform.ask(actor=self.owner, session_id=self.session_id, question="q", regions=[])
        run_job(view.id, ctx=platform.ctx)
        self.turn_id = platform.call(lambda db: db.get(Job, view.id).turn_id)


@pytest.fixture(scope="module")
def seeded(db_url, tmp_path_factory) -> Iterator[Seed]:
    migrate(db_url)
    platform = build_platform(
        Settings(database_url=db_url, artefact_dir=tmp_path_factory.mktemp("clean-a")),
        holder=PredictorHolder(NoopPredictor),
    )
    yield Seed(platform)
    assert platform.call(check_invariants, store=platform.store) == []
    platform.runner.stop()


# Each case: a field, and how to hand a bad value to the service that takes it. `None` as the
# outcome means "a wrong login" (log_in answers None, not an error).
CASES: dict[str, Callable[[Seed, str], Any]] = {
    "comment": lambda s, bad: s.platform.call(
        rate_turn,
        actor=s.reviewer,
        turn_id=s.turn_id,
        text_score=3,
        text_correct=None,
        mask_verdicts=[],
        comment=f"fine{bad}",
    ),
    "turn id": lambda s, bad: s.platform.call(
        rate_turn,
        actor=s.reviewer,
        turn_id=s.turn_id[:8] + bad,
        text_score=3,
        text_correct=None,
        mask_verdicts=[],
    ),
    "session id": lambda s, bad: s.platform.call(
        get_session, actor=s.owner, session_id=s.session_id[:8] + bad
    ),
    "job id": lambda s, bad: s.platform.call(job_view, job_id=f"{bad}0"),
    "link id": lambda s, bad: s.platform.call(revoke_link, actor=s.owner, link_id=f"x{bad}"),
    "share token": lambda s, bad: s.platform.call(open_shared_session, token=f"{'t' * 40}{bad}"),
    "login code": lambda s, bad: s.platform.call(redeem_login_code, code=f"{'c' * 40}{bad}"),
    "new username": lambda s, bad: s.platform.call(
        create_user, username=f"ann{bad}", password="password1", role=Role.user
    ),
    "new password": lambda s, bad: s.platform.call(
        create_user, username=f"pw{uuid.uuid4().hex[:8]}", password=f"password{bad}", role=Role.user
    ),
    "login username": lambda s, bad: s.platform.call(
        log_in, username=f"owner{bad}", password="password1"
    ),
    "login password": lambda s, bad: s.platform.call(
        log_in, username="owner", password=f"password1{bad}"
    ),
    "browser secret": lambda s, bad: s.platform.call(
        anonymous_actor, browser_secret=f"{'b' * 31}{bad}"
    ),
    "window": lambda s, bad: s.platform.call(
        ingest_image,
        store=s.platform.store,
        settings=s.platform.settings,
        data=png_bytes(seed=7),
        window=f"lung{bad}",
    ),
}
BAD = {"nul": "\x00", "surrogate": "\ud800"}


@pytest.mark.parametrize("bad", list(BAD), ids=list(BAD))
@pytest.mark.parametrize("field", list(CASES))
def test_nul_and_lone_surrogates_are_refused_in_words(seeded, field, bad):
    try:
        outcome = CASES[field](seeded, BAD[bad])
    except ServiceError as exc:
        message = str(exc)
        assert message.endswith(".") and len(message) < 200 and not leaks(message), message
        return
    assert outcome is None and field.startswith("login"), outcome  # a wrong login


@pytest.mark.parametrize("bad", list(BAD), ids=list(BAD))
def test_titles_and_questions_are_cleaned_not_refused(seeded, bad):
    title = seeded.platform.call(
        rename_session, actor=seeded.owner, session_id=seeded.session_id, title=f"a{BAD[bad]}b"
    ).title
    assert title == "a b"
    session_id = seeded.platform.call(
        lambda db: (
            create_session(
                db,
                actor=seeded.owner,
                image_id=get_session(db, actor=seeded.owner, session_id=seeded.session_id).image_id,
            ).id
        )
    )
    view = seeded.platform.ask(
        actor=seeded.owner, session_id=session_id, question=f"wh{BAD[bad]}at?", regions=[]
    )
    question = seeded.platform.call(lambda db: db.get(Job, view.id).turn.question)
    assert question == "what?"


@pytest.mark.parametrize("bad", list(BAD), ids=list(BAD))
def test_a_file_name_is_cleaned_not_refused(seeded, bad):
    def body(db: Any) -> tuple[str | None, str]:
        image = ingest_image(
            db,
            store=seeded.platform.store,
            settings=seeded.platform.settings,
            data=png_bytes(seed=11),
            filename=f"sc{BAD[bad]}an.png",
        )
        session = create_session(
            db, actor=seeded.owner, image_id=image.id, filename=f"sc{BAD[bad]}an.png"
        )
        return session.filename, session.title

    name, title = seeded.platform.call(body)
    assert name == title == "sc an.png"


LONG: dict[str, tuple[Callable[[Seed], Any], str]] = {
    "comment": (lambda s: CASES["comment"](s, "x" * 5000), "the limit is 5,000"),
    "title": (
        lambda s: s.platform.call(
            rename_session, actor=s.owner, session_id=s.session_id, title="x" * 300
        ),
        "at most 200",
    ),
    "new username": (lambda s: CASES["new username"](s, "x" * 70), "1-64"),
    "new password": (lambda s: CASES["new password"](s, "x" * 2000), "the limit is 1,024"),
    "question": (
        lambda s: s.platform.ask(
            actor=s.owner, session_id=s.session_id, question="q" * 2001, regions=[]
        ),
        "the limit is 2,000",
    ),
}


@pytest.mark.parametrize("field", list(LONG))
def test_over_long_values_are_refused_with_the_limit(seeded, field):
    call, expect = LONG[field]
    with pytest.raises(ServiceError, match=expect):
        call(seeded)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "NaN", 1e308])
def test_non_finite_numbers_are_refused_by_each_number_field(seeded, value):
    with pytest.raises(InvalidInput) as expiry:
        expiry_from_hours(value)
    with pytest.raises(InvalidInput, match="Rate the answer text from 1 to 5"):
        seeded.platform.call(
            rate_turn,
            actor=seeded.reviewer,
            turn_id=seeded.turn_id,
            text_score=value,
            text_correct=None,
            mask_verdicts=[],
        )
    with pytest.raises(InvalidInput) as index:
        volume_choice(2, value)
    for refused in (expiry, index):
        assert str(refused.value).endswith(".") and not leaks(str(refused.value))


def test_database_errors_become_one_sentence_without_sql(seeded):
    """The platform's safety net: a database error no service expected is logged, and the
    caller gets a sentence (here, a duplicate username written past the service's check)."""

    def duplicate(db: Any) -> None:
        db.add(User(username="owner", role=Role.user))
        db.flush()

    with pytest.raises(ServiceError) as caught:
        seeded.platform.call(duplicate)
    assert "nothing was saved" in str(caught.value) and not leaks(str(caught.value))


# Races on PostgreSQL: the row locks and savepoints that turn them into words.


@pytest.fixture
def pg_platform(postgres_url, tmp_path) -> Iterator[Platform]:
    migrate(postgres_url)
    platform = build_platform(
        Settings(database_url=postgres_url, artefact_dir=tmp_path / "a"),
        holder=PredictorHolder(NoopPredictor),
    )
    yield platform
    platform.runner.stop()


def _at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released together; each result or exception."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:  # collected for the assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_two_asks_at_once_on_one_session_give_one_job_and_a_sentence(pg_platform):
    owner = pg_platform.call(
        lambda db: Actor(
            user_id=create_user(db, username="asker", password="password1", role=Role.user).id
        )
    )
    for round_ in range(8):

        def session(db: Any, n: int = round_) -> str:
            image = ingest_image(
                db, store=pg_platform.store, settings=pg_platform.settings, data=png_bytes(seed=n)
            )
            return create_session(db, actor=owner, image_id=image.id).id

        session_id = pg_platform.call(session)
        ask = lambda sid=session_id: pg_platform.ask(  # noqa: E731
            actor=owner, session_id=sid, question="q", regions=[]
        )
        results = _at_once(ask, ask)
        errors = [r for r in results if isinstance(r, Exception)]
        assert len(errors) == 1, results
        assert isinstance(errors[0], InvalidInput) and STILL_ANSWERING in str(errors[0])
    jobs = pg_platform.call(lambda db: db.scalar(select(func.count(Job.id))))
    assert jobs == 8


def test_two_first_page_loads_of_one_browser_make_one_user(pg_platform):
    for _ in range(8):
        secret = uuid.uuid4().hex
        load = lambda s=secret: pg_platform.call(anonymous_actor, browser_secret=s)  # noqa: E731
        first, second = _at_once(load, load)
        assert isinstance(first, Actor) and isinstance(second, Actor), (first, second)
        assert first.user_id == second.user_id
    users = pg_platform.call(lambda db: db.scalar(select(func.count(User.id))))
    assert users == 8


def test_one_reviewers_rating_sent_twice_at_once_is_one_rating(pg_platform):
    seed = Seed(pg_platform)

    def rate() -> str:
        return pg_platform.call(
            rate_turn,
            actor=seed.reviewer,
            turn_id=seed.turn_id,
            text_score=4,
            text_correct=True,
            mask_verdicts=[],
            comment="ok",
        ).id

    first, second = _at_once(rate, rate)
    assert first == second, (first, second)
    assert pg_platform.call(lambda db: db.scalar(select(func.count(Rating.id)))) == 1


# Through HTTP: the edge refuses what no input may hold before a handler runs.


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[Live]:
    with live_app(tmp_path_factory.mktemp("clean-http")) as live:
        yield live


@pytest.mark.parametrize(
    ("api_name", "body"),
    [
        ("share", '{"data": ["0123", "view", NaN, false]}'),
        ("share", '{"data": ["0123", "view", -Infinity, false]}'),
        ("rate", '{"data": ["0123", Infinity, "", "", "", null]}'),
        ("upload", '{"data": [null, "", 2, NaN, ""]}'),
        ("ask", '{"data": ["\\u0000", "q", "", false]}'),
        ("ask", '{"data": ["0123", "q\\ud800", "", false]}'),
    ],
)
def test_http_inputs_with_nan_nul_or_surrogates_are_refused_at_the_edge(app, api_name, body):
    response = httpx.post(
        f"{app.url}gradio_api/call/{api_name}",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 422, response.text
    message = response.json()["error"]
    assert message == NOT_FINITE or "NUL" in message or "surrogate" in message
    assert not leaks(message)


def test_gradio_client_text_with_a_nul_gets_the_sentence(app):
    # (gradio_client cannot send NaN at all: its JSON encoder refuses it.)
    with pytest.raises(ValidationError, match="contains a NUL character"):
        Client(app.url, verbose=False).predict("\x00", "q", "", False, api_name="/ask")


def test_the_leak_scanner_knows_what_internals_look_like():
    raw = (
        "(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "
        '"uq_turns_session_id" [SQL: INSERT INTO turns (id) VALUES (%(id)s)]'
    )
    assert "SQL" in leaks(raw)
    assert "traceback" in leaks('Traceback (most recent call last):\n  File "x.py", line 3, in f')
    assert "file path" in leaks("No such file: /tmp/gradio/abc/scan.png")
    assert "Python internals" in leaks("cannot convert float NaN to integer")
    assert leaks("That session does not exist or was deleted.") == []
    assert leaks(STILL_ANSWERING + "; wait or cancel it.") == []
