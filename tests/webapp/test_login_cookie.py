"""The login cookie (set and cleared by `webapp.auth`), reopening the last session on a
reload, and the takeover of an anonymous identity through what a teacher sees."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.models import Role
from tests.webapp.conftest import write_png
from tests.webapp.helpers import ask_box, browser, user
from webapp import auth
from webapp.handlers import account, sessions, share
from webapp.handlers.api import login as api_login

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
BASE = "http://testserver"


@pytest.fixture
def client(web) -> TestClient:
    app = FastAPI()
    app.include_router(auth.router(web))
    return TestClient(app, base_url=BASE)


def _cookie_header(response) -> str:
    return "; ".join(response.headers.get_list("set-cookie")).lower()


def test_login_sets_an_http_only_cookie_that_a_reload_finds(web, client, tmp_path):
    user(web, "rita", Role.reviewer)
    key = "3" * 32
    page = browser(web, key)
    asked = ask_box(web, write_png(tmp_path / "scan.png", 60, 40), page["actor"], "which?")
    sessions.remember_view(web, asked["view"], page["actor"])
    ok = account.login(web, "rita", "a long password", page["actor"])
    code = ok["login_code"]
    # Right after login, "My sessions" lists what this browser made anonymously.
    assert [row[-1] for row in ok["sessions_table"]] == [asked["view"]["session_id"]]

    set_cookie = client.post(auth.ROUTE, json={"code": code})
    assert set_cookie.status_code == 200
    header = _cookie_header(set_cookie)
    assert "httponly" in header and "samesite=strict" in header and "secure" not in header
    token = set_cookie.cookies[auth.COOKIE]
    assert token and token != code
    # The code works once.
    assert client.post(auth.ROUTE, json={"code": code}).status_code == 400

    # A reload: the cookie (not the tab) says who this is, and the last session reopens.
    reloaded = sessions.page_load(web, key, "", "another-page", token)
    assert reloaded["actor"]["username"] == "rita" and not reloaded["actor"]["anonymous"]
    assert "Logged in as **rita**" in reloaded["account_md"]
    assert reloaded["view"]["session_id"] == asked["view"]["session_id"]
    assert "which?" in str(reloaded["chat"])

    # Logout ends the login on the server and clears the cookie.
    out = account.logout(web, key, token)
    assert out["actor"]["anonymous"]
    client.cookies.set(auth.COOKIE, token)
    cleared = client.delete(auth.ROUTE)
    assert cleared.status_code == 200
    assert f"{auth.COOKIE}=" in _cookie_header(cleared) and "max-age=0" in _cookie_header(cleared)
    after = sessions.page_load(web, key, "", "third-page", token)
    assert after["actor"]["anonymous"] and after["sessions_table"] == []


def test_the_cookie_is_secure_behind_https(web, client):
    rita = user(web, "rita", Role.reviewer)
    from serving.services.accounts import Actor
    from serving.services.logins import issue_login_code

    code = web.call(issue_login_code, actor=Actor(user_id=rita["user_id"], role=Role.reviewer))
    response = client.post(auth.ROUTE, json={"code": code}, headers={"x-forwarded-proto": "https"})
    assert "secure" in _cookie_header(response)


def test_a_bad_code_or_cookie_logs_nobody_in(web, client):
    assert client.post(auth.ROUTE, json={"code": "x" * 43}).status_code == 400
    # Only JSON is read (a cross-site form cannot send it without the page's consent).
    form = client.post(auth.ROUTE, content=b"code=x", headers={"content-type": "text/plain"})
    assert form.status_code == 422 and auth.COOKIE not in form.cookies
    loaded = sessions.page_load(web, "4" * 32, "", "p", "not-a-real-login-token-at-all")
    assert loaded["actor"]["anonymous"]


def test_the_teachers_view_of_a_student_does_not_take_over_the_student(web, tmp_path):
    """The attack of the issue, through the page's own handlers."""
    teacher = user(web, "teacher", Role.instructor)
    user(web, "mallory", Role.user)
    case = ask_box(web, write_png(tmp_path / "case.png", 60, 40), teacher)
    made = share.create_link(web, "fork", "never", True, case["view"], teacher, BASE)
    token = made["share_url"].split("class=")[1]
    student_key = "5" * 32
    student = browser(web, student_key, "?class=" + token)
    fork_id = student["view"]["session_id"]
    name = share.class_overview(web, made["links"]["value"], teacher)["class_table"][0][0]
    assert student_key not in name

    # The name as a browser key: a stranger with nothing.
    for guess in (name, name.split()[-1], "anon-" + name.split()[-1]):
        thief = browser(web, guess)
        assert thief["sessions_table"] == [] and thief.get("view", {}).get("session_id") is None
        assert "does not exist" in sessions.open_session(web, fork_id, thief["actor"])["status"]
        # ... and merged into a login: nothing moves.
        forged = {**thief["actor"], "browser_secret": guess}
        moved = account.login(web, "mallory", "a long password", forged)
        assert moved["sessions_table"] == [] and moved["login_status"] == ""
        assert api_login(web, "mallory", "a long password", forged)[1]["username"] == "mallory"
    # The student still has the copy.
    again = browser(web, student_key)
    assert [row[-1] for row in again["sessions_table"]] == [fork_id]
