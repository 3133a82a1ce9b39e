"""Share links, read-only views, forks, class links and revocation through the handlers."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from sqlalchemy import select

from serving.models import ChatSession, Role, ShareLink, utcnow
from tests.webapp.conftest import FakePredictor, write_png
from tests.webapp.helpers import ask_box, browser, run_ask, settled, uploaded, user
from webapp.handlers import sessions, share
from webapp.handlers.common import Web

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
BASE = "http://medplib.test"


def _token(url: str, key: str = "share") -> str:
    return parse_qs(urlparse(url).query)[key][0]


@pytest.fixture
def shared(web, tmp_path):
    """An answered session of Alice's browser and Alice's page state."""
    alice = browser(web, "a" * 32)
    final = ask_box(web, write_png(tmp_path / "scan.png", 60, 40), alice["actor"])
    return alice["actor"], final["view"]


def test_view_link_opens_read_only_and_cannot_write_or_fork(web, shared):
    owner, view = shared
    made = share.create_link(web, "view", "1 day", False, view, owner, BASE)
    assert made["share_url"].startswith(BASE + "/?share=")
    bob = browser(web, "b" * 32, "?share=" + _token(made["share_url"]))
    assert bob["view"]["read_only"] and bob["view"]["token"]
    assert "Read-only view" in bob["banner"] and bob["fork_btn"]["visible"] is False
    assert bob["ask_btn"]["interactive"] is False
    assert bob["chat"][-1]["content"].startswith("answer to:")
    assert len(bob["downloads"]) == 4  # the link lets Bob download the masks
    # The read-only view refuses questions, with or without the UI's disabled button.
    outputs = run_ask(web, "mine now?", None, None, bob["view"], bob["actor"])
    assert "read-only" in outputs[0]["status"]
    forked = sessions.fork_current(web, bob["view"], bob["actor"])
    assert "view-only" in forked["status"]


def test_fork_link_copies_into_the_viewers_own_session(web, shared):
    owner, view = shared
    made = share.create_link(web, "fork", "7 days", False, view, owner, BASE)
    bob = browser(web, "b" * 32, "?share=" + _token(made["share_url"]))
    assert bob["fork_btn"]["visible"] is True and "Fork" in bob["banner"]
    forked = sessions.fork_current(web, bob["view"], bob["actor"])
    copy_id = forked["view"]["session_id"]
    assert copy_id != view["session_id"] and not forked["view"]["read_only"]
    assert forked["chat"] == bob["chat"] and forked["ask_btn"]["interactive"] is True
    assert [row[-1] for row in forked["sessions_table"]] == [copy_id]
    outputs = run_ask(web, "And now?", None, None, forked["view"], bob["actor"])
    assert outputs[-1]["status"] == "answered" and len(outputs[-1]["chat"]) == 4


def test_revoked_and_expired_links_give_one_clear_message(web, shared):
    owner, view = shared
    made = share.create_link(web, "view", "1 hour", False, view, owner, BASE)
    link_id = made["links"]["value"]
    assert made["links"]["choices"][0][1] == link_id
    revoked = share.revoke(web, link_id, view, owner)
    assert "revoked" in revoked["share_status"]
    dead = browser(web, "c" * 32, "?share=" + _token(made["share_url"]))
    assert dead["status"] == "⚠ This link was revoked by its owner."
    assert dead["actor"]["anonymous"] and "view" not in dead
    other = share.create_link(web, "view", "1 hour", False, view, owner, BASE)

    def expire(db):
        link = db.get(ShareLink, other["links"]["value"])
        link.expires_at = utcnow() - timedelta(minutes=1)

    web.call(expire)
    expired = browser(web, "c" * 32, "?share=" + _token(other["share_url"]))
    assert "expired" in expired["status"] and "view" not in expired
    garbage = browser(web, "c" * 32, "?share=not-a-real-token-at-all")
    assert "not valid" in garbage["status"]


def test_only_the_owner_can_share_and_revoke(web, shared):
    owner, view = shared
    bob = browser(web, "b" * 32)["actor"]
    refused = share.create_link(web, "view", "1 day", False, view, bob, BASE)
    assert "session" in refused["share_status"] and "share_url" not in refused
    made = share.create_link(web, "view", "1 day", False, view, owner, BASE)
    # Someone else's link is answered like a missing one.
    assert share.revoke(web, made["links"]["value"], view, bob)["share_status"] == (
        "⚠ That link does not exist."
    )


def test_class_link_gives_each_student_one_copy_and_the_instructor_sees_them(web, tmp_path):
    teacher = user(web, "teacher", Role.instructor)
    case = ask_box(web, write_png(tmp_path / "case.png", 60, 40), teacher)
    made = share.create_link(web, "view", "never", True, case["view"], teacher, BASE)
    assert "/?class=" in made["share_url"]
    token = _token(made["share_url"], "class")
    first = browser(web, "d" * 32, "?class=" + token)
    again = browser(web, "d" * 32, "?class=" + token)
    assert first["view"]["session_id"] == again["view"]["session_id"]
    assert not first["view"]["read_only"] and first["drawn"] == case["drawn"]
    run_ask(web, "What do you see?", None, None, first["view"], first["actor"])
    # A plain ?share= with a class token also lands in the student's own copy.
    other = browser(web, "e" * 32, "?share=" + token)
    assert other["view"]["session_id"] not in (first["view"]["session_id"], None)
    overview = share.class_overview(web, made["links"]["value"], teacher)
    rows = overview["class_table"]
    assert len(rows) == 2 and overview["class_status"] == "2 student copies."
    by_session = {row[-1]: row for row in rows}
    student = by_session[first["view"]["session_id"]]
    # The teacher sees a display name, never the student's browser secret.
    assert student[0].startswith("Anonymous ") and "d" * 16 not in student[0]
    # The case's saved box is not sent with a question that does not name it.
    assert student[1] == 2 and student[2] == "What do you see?"
    opened = share.open_fork(web, first["view"]["session_id"], teacher)
    assert opened["view"]["read_only"] and len(opened["chat"]) == 4
    # Students cannot look at the class (it is not confirmed to exist for them), and
    # anonymous users cannot make class links.
    assert (
        share.class_overview(web, made["links"]["value"], other["actor"])["class_status"]
        == "⚠ That class link does not exist."
    )
    anon_case = ask_box(web, write_png(tmp_path / "mine.png", 60, 40), other["actor"])
    refused = share.create_link(web, "fork", "1 day", True, anon_case["view"], other["actor"], BASE)
    assert "instructor role" in refused["share_status"]


def test_the_class_table_shows_each_answer_as_the_chat_does(make_platform, tmp_path):
    fake = FakePredictor(answer="It is the liver.", raw_answer="It is the liver <SEG>.")
    web = Web(make_platform(predictor=fake))
    teacher = user(web, "teacher", Role.instructor)
    case = uploaded(web, write_png(tmp_path / "case.png", 60, 40))
    asked = settled(run_ask(web, "Segment the liver.", None, None, case["view"], teacher))
    made = share.create_link(web, "view", "never", True, asked["view"], teacher, BASE)
    student = browser(web, "f" * 32, "?class=" + _token(made["share_url"], "class"))
    run_ask(web, "And the liver?", None, None, student["view"], student["actor"])
    ((*_, question, answer, _),) = share.class_overview(web, made["links"]["value"], teacher)[
        "class_table"
    ]
    assert (question, answer) == ("And the liver?", "It is the liver [mask 1].")


def test_admin_deletes_any_session_and_others_cannot(web, shared):
    owner, view = shared
    bob = browser(web, "b" * 32)["actor"]
    refused = sessions.remove_session(web, view["session_id"], {}, bob)
    assert refused["sessions_status"] == "⚠ That session does not exist or was deleted."
    admin = user(web, "root", Role.admin)
    done = sessions.remove_session(web, view["session_id"], {}, admin)
    assert done["sessions_status"] == "Session deleted."
    assert web.call(lambda db: db.scalars(select(ChatSession)).all()) == []
