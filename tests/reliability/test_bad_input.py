"""Every case of the bad-input corpus gets a clear message; the record stays sound."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from serving.execution import run_job
from serving.invariants import check_invariants
from serving.models import Image, JobStatus, LinkRole, Role, ShareLink
from serving.platform import build_platform
from serving.predictors import NoopPredictor, PredictorHolder
from serving.services.accounts import Actor, create_user
from serving.services.errors import ServiceError
from serving.services.images import ingest_image
from serving.services.sessions import create_session, rename_session
from serving.services.shares import (
    create_share_link,
    fork_session,
    open_shared_session,
    revoke_link,
)
from serving.settings import Settings
from tests.reliability.corpus import REQUEST_CASES, TOKEN_CASES, file_cases
from tests.serving.conftest import migrate, png_bytes

FILES = file_cases()


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad-input")
    url = f"sqlite:///{tmp / 'db.sqlite'}"
    migrate(url)
    p = build_platform(
        Settings(database_url=url, artefact_dir=tmp / "a", max_image_pixels=4096 * 4096),
        holder=PredictorHolder(NoopPredictor),
    )
    yield p
    problems = p.call(check_invariants, store=p.store)
    assert problems == [], problems


@pytest.fixture(scope="module")
def owner(platform):
    def seed(db):
        actor = Actor(
            user_id=create_user(db, username="o", password="password1", role=Role.user).id
        )
        image = ingest_image(
            db, store=platform.store, settings=platform.settings, data=png_bytes(30, 20)
        )
        return actor, create_session(db, actor=actor, image_id=image.id).id

    return platform.call(seed)


def test_the_corpus_is_large_enough():
    assert len(FILES) + len(REQUEST_CASES) + len(TOKEN_CASES) + 3 >= 40


@pytest.mark.parametrize("case", FILES, ids=[c.name for c in FILES])
def test_files(platform, case):
    before = platform.call(lambda db: len(list(db.scalars(select(Image.id)))))
    if case.expect is None:
        image = platform.call(
            ingest_image,
            store=platform.store,
            settings=platform.settings,
            data=case.data,
            filename=case.filename,
        )
        assert image.width_px >= 1 and image.height_px >= 1
        if case.accepted_as is not None:
            shown = f"{image.source_format} {image.width_px}x{image.height_px}"
            assert shown == case.accepted_as
        return
    with pytest.raises(ServiceError) as err:
        platform.call(
            ingest_image,
            store=platform.store,
            settings=platform.settings,
            data=case.data,
            filename=case.filename,
        )
    message = str(err.value)
    assert case.expect.lower() in message.lower()
    assert message.endswith((".", "!", "?")) and "Traceback" not in message and len(message) < 300
    assert platform.call(lambda db: len(list(db.scalars(select(Image.id))))) == before


@pytest.mark.parametrize(
    ("name", "question", "regions", "expect"), REQUEST_CASES, ids=[c[0] for c in REQUEST_CASES]
)
def test_requests(platform, owner, name, question, regions, expect):
    actor, session_id = owner
    if expect is None:
        view = platform.ask(actor=actor, session_id=session_id, question=question, regions=regions)
        assert run_job(view.id, ctx=platform.ctx) is JobStatus.succeeded
        return
    with pytest.raises(ServiceError) as err:
        platform.ask(actor=actor, session_id=session_id, question=question, regions=regions)
    assert expect.lower() in str(err.value).lower()
    assert "Traceback" not in str(err.value)


@pytest.mark.parametrize("token", TOKEN_CASES)
def test_unknown_tokens(platform, token):
    with pytest.raises(ServiceError, match="not valid"):
        platform.call(open_shared_session, token=token)


def test_expired_and_revoked_tokens_and_view_only_fork(platform, owner):
    actor, session_id = owner
    link, expired = platform.call(
        create_share_link, actor=actor, session_id=session_id, expires_in=timedelta(hours=1)
    )

    def expire(db):
        row = db.get(ShareLink, link.id)
        row.expires_at = row.created_at - timedelta(seconds=1)

    platform.call(expire)
    with pytest.raises(ServiceError, match="expired"):
        platform.call(open_shared_session, token=expired)
    link2, revoked = platform.call(create_share_link, actor=actor, session_id=session_id)
    platform.call(revoke_link, actor=actor, link_id=link2.id)
    with pytest.raises(ServiceError, match="revoked"):
        platform.call(open_shared_session, token=revoked)
    _, view_only = platform.call(
        create_share_link, actor=actor, session_id=session_id, role=LinkRole.view
    )
    with pytest.raises(ServiceError, match="view-only"):
        platform.call(fork_session, actor=actor, token=view_only)


@pytest.mark.parametrize(
    ("title", "expect"),
    [("<script>alert(1)</script>", None), ("x" * 201, "at most 200"), ("a\x00b\x1bc", None)],
)
def test_titles(platform, owner, title, expect):
    actor, session_id = owner
    if expect is None:
        session = platform.call(rename_session, actor=actor, session_id=session_id, title=title)
        assert "\x00" not in session.title and "\x1b" not in session.title
        return
    with pytest.raises(ServiceError, match=expect):
        platform.call(rename_session, actor=actor, session_id=session_id, title=title)
