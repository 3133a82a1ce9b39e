"""In headless Chromium: a login survives a reload (HTTP-only cookie) and reopens the last
session, logout clears it, and a teacher's view of a student cannot take the student over."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from serving.models import Role
from serving.platform import build_platform
from serving.services.accounts import create_user
from serving.settings import Settings
from tests.webapp.browsing import upload, wait_for_text
from tests.webapp.conftest import BROWSER_TIMEOUT_MS, live_server, write_png
from webapp.auth import COOKIE

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("login")
    with live_server(root) as address:
        # More accounts in the same database (live_server makes the reviewer "rita").
        extra = build_platform(
            Settings(database_url=f"sqlite:///{root / 'medplib.db'}", artefact_dir=root / "a")
        )
        for name, role in (("ines", Role.instructor), ("mallory", Role.user)):
            extra.call(create_user, username=name, password="a long password", role=role)
        yield address


@pytest.fixture
def open_page(chromium, server):
    contexts = []

    def make(url: str = "", init_key: str | None = None):
        context = chromium.new_context(viewport={"width": 1400, "height": 1100})
        if init_key is not None:
            context.add_init_script(
                f"window.localStorage.setItem('medplib_browser_key', {init_key!r});"
            )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(BROWSER_TIMEOUT_MS)
        page.goto(server + url)
        ready(page)
        return page

    yield make
    for context in contexts:
        context.close()


def ready(page) -> None:
    page.wait_for_selector("#medplib-upload input[type=file]", state="attached")
    account(page, "anonymously|Logged in")


# Gradio renders only the selected tab: each check opens its tab first.


def account(page, pattern: str) -> None:
    page.get_by_role("tab", name="Account").click()
    wait_for_text(page, "#medplib-account", pattern)


def on_ask_tab(page, selector: str, pattern: str) -> None:
    page.get_by_role("tab", name="Ask").click()
    wait_for_text(page, selector, pattern)


def ask(page, question: str) -> None:
    page.get_by_role("tab", name="Ask").click()
    page.fill("#medplib-question textarea", question)
    page.click("#medplib-ask")
    wait_for_text(page, "#medplib-status", "answered")


def log_in(page, name: str) -> None:
    page.get_by_role("tab", name="Account").click()
    page.locator("#medplib-username textarea, #medplib-username input").first.fill(name)
    page.locator("#medplib-password input, #medplib-password textarea").first.fill(
        "a long password"
    )
    page.click("#medplib-login")
    account(page, f"Logged in as {name}")


def login_cookie(page) -> dict | None:
    return next((c for c in page.context.cookies() if c["name"] == COOKIE), None)


def sessions_text(page) -> str:
    page.get_by_role("tab", name="My sessions").click()
    return page.inner_text("#medplib-sessions")


def test_login_survives_a_reload_and_logout_clears_it(open_page, tmp_path):
    page = open_page()
    page.get_by_role("tab", name="Ask").click()
    upload(page, write_png(tmp_path / "before-login.png", 60, 40))
    ask(page, "asked before logging in")
    log_in(page, "rita")
    # Right after login, "My sessions" lists the session this browser made anonymously.
    page.get_by_role("tab", name="My sessions").click()
    wait_for_text(page, "#medplib-sessions", "before-login.png")

    for _ in range(50):
        cookie = login_cookie(page)
        if cookie:
            break
        page.wait_for_timeout(100)
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # Page script sees neither the cookie nor a copy of it in storage.
    assert COOKIE not in page.evaluate("document.cookie")
    stored = page.evaluate("JSON.stringify(Object.assign({}, window.localStorage))")
    assert cookie["value"] not in stored

    page.reload()
    ready(page)
    account(page, "Logged in as rita")
    # The last session is on screen again.
    on_ask_tab(page, "#medplib-chat", "asked before logging in")
    assert "before-login.png" in sessions_text(page)

    page.get_by_role("tab", name="Account").click()
    # Logout answers on the page first, then clears the cookie and reloads: wait for that
    # reload, or the checks below race it.
    with page.expect_navigation():
        page.get_by_role("button", name="Log out").click()
    ready(page)
    account(page, "anonymously")
    assert login_cookie(page) is None
    page.reload()
    ready(page)
    account(page, "anonymously")
    assert "before-login.png" not in sessions_text(page)


def test_what_the_teacher_sees_cannot_take_over_the_student(open_page, tmp_path):
    teacher = open_page()
    teacher.get_by_role("tab", name="Ask").click()
    upload(teacher, write_png(tmp_path / "class-case.png", 60, 40, seed=7))
    ask(teacher, "the case question")
    log_in(teacher, "ines")
    teacher.get_by_role("tab", name="Share").click()
    teacher.get_by_label("Class link (instructors)").check()
    teacher.click("#medplib-share")
    teacher.wait_for_function(
        "() => /class=/.test(document.querySelector('#medplib-share-url textarea, "
        "#medplib-share-url input')?.value ?? '')"
    )
    url = teacher.locator("#medplib-share-url textarea, #medplib-share-url input").first
    query = "?" + url.input_value().split("?", 1)[1]

    student_key = "0123456789abcdef0123456789abcdef"
    student = open_page(query, init_key=student_key)
    on_ask_tab(student, "#medplib-chat", "the case question")
    ask(student, "the student's own question")

    teacher.get_by_role("tab", name="Class").click()
    teacher.get_by_role("button", name="Show student copies").click()
    wait_for_text(teacher, "#medplib-class", "student's own question")
    shown = teacher.inner_text("#medplib-class")
    name = re.search(r"Anonymous \w+", shown).group(0)
    assert student_key not in shown

    # The shown name (and its random part) presented as this browser's key, then a login
    # from that browser: the student's copy is reachable by neither.
    for guess in (name, name.split()[-1], name.split()[-1].rjust(32, "0")):
        thief = open_page(init_key=guess)
        assert "class-case.png" not in sessions_text(thief)
        log_in(thief, "mallory")
        assert "class-case.png" not in sessions_text(thief)
    student.reload()
    ready(student)
    assert "class-case.png" in sessions_text(student)
    on_ask_tab(student, "#medplib-chat", "the student's own question")
