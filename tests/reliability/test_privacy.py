"""Privacy and sound records: a de-duplicated image never shows another uploader's file name,
share links must be given a positive lifetime, and the invariant checker passes after it all.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import gradio as gr
import pytest
from alembic import command
from sqlalchemy import func, select, text

from serving.db import make_engine
from serving.invariants import check_invariants
from serving.migrate import alembic_config
from serving.models import Image, ShareLink
from serving.services.errors import InvalidInput
from serving.services.reading import read_session
from serving.services.shares import expiry_from_hours
from tests.webapp.conftest import FakePredictor, write_png
from webapp.handlers import api
from webapp.handlers import sessions as session_handlers
from webapp.handlers import upload as upload_handlers
from webapp.handlers.chat import submit
from webapp.handlers.common import Web, to_actor

PATIENT = "DOE_JANE_1970-01-01.png"


@pytest.fixture
def web(make_platform, sqlite_url) -> Web:
    platform = make_platform(sqlite_url, predictor=FakePredictor())
    platform.runner.start()
    return Web(platform)


def _shows(value: Any, needle: str) -> bool:
    return needle in json.dumps(value, default=str)


def _ui_upload(web: Web, tmp_path, name: str, key: str) -> tuple[dict, dict]:
    """A browser (its key) uploads the same pixels under its own file name."""
    actor = session_handlers.page_load(web, key, "", f"hash-{key[:4]}")["actor"]
    folder = tmp_path / key[:4]
    folder.mkdir()
    shown = upload_handlers.upload(
        web, write_png(folder / name, 60, 40, seed=9), None, 2, 0, {}, [], new_file=True
    )
    return actor, shown


def test_a_second_uploader_of_the_same_bytes_sees_only_their_own_file_name(web, tmp_path):
    first, _ = _ui_upload(web, tmp_path, PATIENT, "a" * 32)
    second, shown = _ui_upload(web, tmp_path, "scan.png", "b" * 32)
    assert shown["view"]["filename"] == "scan.png" and not _shows(shown, "DOE_JANE")
    _, view, second, _, _ = submit(web, "what?", None, None, shown["view"], second, "hash-bbbb")
    session = web.call(read_session, actor=to_actor(second), session_id=view["session_id"])
    assert session.title == "scan.png" and session.image.filename == "scan.png"
    assert not _shows(session_handlers.sessions_table(web, second), "DOE_JANE")
    opened = session_handlers.open_session(web, view["session_id"], second)
    assert not _shows({k: v for k, v in opened.items() if k != "overlay"}, "DOE_JANE")
    # The shared image row holds no name at all.
    assert web.call(lambda db: [i.filename for i in db.scalars(select(Image))]) == [None]


def test_the_api_names_a_shared_image_by_each_callers_upload(web, tmp_path):
    folder_a, folder_b = tmp_path / "a", tmp_path / "b"
    folder_a.mkdir()
    folder_b.mkdir()
    state_a, made_a = api.upload(
        web, write_png(folder_a / PATIENT, seed=4), "", 2, -1, "", None, "api-a"
    )
    state_b, made_b = api.upload(
        web, write_png(folder_b / "mine.png", seed=4), "", 2, -1, "", None, "api-b"
    )
    assert made_a["image_id"] == made_b["image_id"]  # one stored image
    seen_b = api.session(web, made_b["session_id"], "", state_b, "api-b")
    assert seen_b["image"]["filename"] == "mine.png" and seen_b["title"] == "mine.png"
    assert not _shows(seen_b, "DOE_JANE")
    seen_a = api.session(web, made_a["session_id"], "", state_a, "api-a")
    assert seen_a["image"]["filename"] == PATIENT  # the uploader still sees their own


def test_a_window_change_keeps_the_uploaders_name(web, tmp_path):
    _, first = _ui_upload(web, tmp_path, PATIENT, "c" * 32)
    _, shown = _ui_upload(web, tmp_path, "again.png", "d" * 32)
    again = upload_handlers.upload(web, None, "lung", 2, 0, shown["view"], [], new_file=False)
    assert not _shows({k: v for k, v in again.items() if k != "prompter"}, "DOE_JANE")


@pytest.mark.parametrize("hours", [-1, 0, -0.0001, float("nan"), float("inf"), 10**9])
def test_share_expiry_must_be_positive_and_finite(web, tmp_path, hours):
    with pytest.raises(InvalidInput, match="expiry"):
        expiry_from_hours(hours)
    state, made = api.upload(web, write_png(tmp_path / "x.png", seed=2), "", 2, -1, "", None, "e")
    with pytest.raises(gr.Error) as refused:
        api.share(web, made["session_id"], "view", hours, False, state, "e", "http://h")
    assert "expiry" in refused.value.message and refused.value.message.endswith(".")
    assert web.call(lambda db: db.scalar(select(func.count(ShareLink.id)))) == 0


def test_a_positive_expiry_and_no_expiry_make_links(web, tmp_path):
    state, made = api.upload(web, write_png(tmp_path / "y.png", seed=3), "", 2, -1, "", None, "p")
    hour = api.share(web, made["session_id"], "view", 1.5, False, state, "p", "http://h")
    never = api.share(web, made["session_id"], "fork", None, False, state, "p", "http://h")
    assert hour["expires_at"] is not None
    # An anonymous client's "never" is the anonymous default of seven days.
    assert never["expires_at"] is not None and never["role"] == "fork"


def test_invariants_hold_after_forks_of_answered_shared_images(web, tmp_path):
    state, made = api.upload(web, write_png(tmp_path / "z.png", seed=5), "", 2, -1, "", None, "f")
    _, other = api.upload(web, write_png(tmp_path / "w.png", seed=5), "", 2, -1, "", None, "g")
    _, answer = asyncio.run(api.ask(web, made["session_id"], "what?", "", True, state, "f"))
    assert answer["status"] == "succeeded" and other["image_id"] == made["image_id"]
    link = api.share(web, made["session_id"], "fork", 24, False, state, "f", "http://h")
    _, copy = api.fork(web, link["token"], None, "guest")
    assert copy["session_id"] != made["session_id"]
    assert web.platform.call(check_invariants, store=web.platform.store) == []
    # The operators' command says the same.
    settings = web.settings
    checked = subprocess.run(
        [sys.executable, "-m", "serving.invariants"],
        env={
            **os.environ,
            "MEDPLIB_DATABASE_URL": settings.database_url,
            "MEDPLIB_ARTEFACT_DIR": str(settings.artefact_dir),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0 and "0 problem(s)" in checked.stdout, checked


def test_migration_moves_file_names_from_images_to_the_first_session(database_url):
    cfg = alembic_config(database_url)
    command.upgrade(cfg, "0003")
    engine = make_engine(database_url)
    rows = {
        "users": [("u1", "first"), ("u2", "second")],
        "sessions": [("s1", "u1", None, 1), ("s2", "u2", None, 2), ("s3", "u2", "s1", 3)],
    }
    with engine.begin() as conn:
        for user_id, name in rows["users"]:
            conn.execute(
                text(
                    "INSERT INTO users (id, username, role, anonymous, created_at) "
                    "VALUES (:id, :name, 'user', :no, CURRENT_TIMESTAMP)"
                ),
                {"id": user_id, "name": name, "no": False},
            )
        conn.execute(
            text(
                "INSERT INTO images (id, sha256, original_key, display_key, source_format, "
                "width_px, height_px, byte_size, filename, notes, created_at) VALUES ('i1', "
                "'h', 'o', 'd', 'png', 4, 4, 10, :name, '[]', :at)"
            ),
            {"name": PATIENT, "at": "2026-01-01 00:01:00"},  # uploaded with session s1
        )
        for session_id, owner, forked, minute in rows["sessions"]:
            conn.execute(
                text(
                    "INSERT INTO sessions (id, owner_id, image_id, title, visibility, regions, "
                    "forked_from_id, created_at, updated_at) VALUES (:id, :owner, 'i1', 't', "
                    "'private', '[]', :forked, :at, :at)"
                ),
                {
                    "id": session_id,
                    "owner": owner,
                    "forked": forked,
                    "at": f"2026-01-01 00:0{minute}:00",
                },
            )
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        names = dict(conn.execute(text("SELECT id, filename FROM sessions")).all())
        image_name = conn.execute(text("SELECT filename FROM images")).scalar()
    assert names == {"s1": PATIENT, "s2": None, "s3": PATIENT} and image_name is None
    command.downgrade(cfg, "0003")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT filename FROM images")).scalar() == PATIENT
    engine.dispose()
