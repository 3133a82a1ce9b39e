"""User text is text: titles, questions, answers, file names and comments show as typed.

No Markdown image is fetched by a viewer's browser, no link can be clicked, no HTML runs:
checked on the rendered values of every Markdown / Chatbot / HTML component that carries
user text (through a CommonMark renderer), and in headless Chromium on a share page, with a
loopback server as the image's target that must see no request.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterator

import pytest
from gradio_client import Client, handle_file
from markdown_it import MarkdownIt

from serving.models import Role
from serving.services.accounts import Actor, create_user
from serving.services.reviews import export_ratings, rate_turn
from serving.services.sessions import rename_session
from serving.services.turns import job_view
from tests.reliability.live import Live, Tripwire, live_app, tripwire
from tests.webapp.conftest import BROWSER_TIMEOUT_MS, FakePredictor, write_png
from webapp import render
from webapp.handlers import review as review_handlers
from webapp.handlers import sessions as session_handlers
from webapp.handlers import upload as upload_handlers
from webapp.handlers.chat import submit
from webapp.handlers.common import Web, actor_state, to_actor
from webapp.handlers.share import create_link

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TITLE = "![x](http://127.0.0.1:1/t.png) [click](https://evil.example)"
HOSTILE = [
    TITLE,
    "<img src=x onerror=alert(1)><script>alert(2)</script>",
    "[ref]\n\n[ref]: https://evil.example/ref",
    "see www.evil.example or mail me@evil.example or https://evil.example/bare",
    "`code` **bold** _it_ # heading | a | b |\n|---|---|",
    '<a href="https://evil.example">a</a> &amp; \\[x](https://evil.example)',
]
# Tables and strikethrough on: the GFM syntax a chat renderer adds to CommonMark.
MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])
AUTOLINKABLE = re.compile(r"://|(?<![\w.-])www\.|@", re.IGNORECASE)


def assert_plain(value: str, typed: str | None = None, *, formatting: bool = True) -> None:
    """``value`` (a component's Markdown) renders without images, links or user HTML, and
    with bare URLs and addresses broken up; ``typed`` shows in it exactly as typed.

    ``formatting=False``: the value is user text alone, so no formatting may come out either
    (a component's own wording may be bold).
    """
    rendered = MARKDOWN.render(value)
    tags = ["<img", "<a ", "<script", "<b>"]
    if not formatting:
        tags += ["<code>", "<h1", "<table", "<em>", "<strong>"]
    for tag in tags:
        assert tag not in rendered, (tag, value, rendered)
    assert not AUTOLINKABLE.search(value), value
    if typed is not None:
        assert typed in html.unescape(value)


@pytest.mark.parametrize("text", HOSTILE)
def test_escaped_text_is_plain_under_markdown(text):
    assert_plain(render.escape_text(text), text, formatting=False)
    messages = render.chat_messages([render.ChatTurn(question=text, answer=text)])
    assert_plain(messages[1]["content"], text, formatting=False)


@pytest.fixture
def web(make_platform, sqlite_url) -> Web:
    return Web(make_platform(sqlite_url, predictor=FakePredictor(answer=TITLE)))


def _session_with(web: Web, tmp_path) -> tuple[dict, dict]:
    """An answered session whose title, question, answer and file name are hostile."""
    web.platform.runner.start()
    owner = session_handlers.page_load(web, "o" * 32, "", "hash-owner")["actor"]
    path = write_png(tmp_path / "[f](https:evil.example).png", 60, 40, seed=1)
    shown = upload_handlers.upload(web, path, None, 2, 0, {}, [], new_file=True)
    job, view, owner, _, _ = submit(web, TITLE, None, None, shown["view"], owner, "hash-owner")
    deadline = time.monotonic() + 30
    while not web.call(job_view, job_id=job.id).status.final and time.monotonic() < deadline:
        time.sleep(0.05)
    web.call(rename_session, actor=to_actor(owner), session_id=view["session_id"], title=TITLE)
    return owner, view


def test_share_page_values_carry_no_markup(web, tmp_path):
    owner, view = _session_with(web, tmp_path)
    made = create_link(web, "view", "7 days", False, view, owner, "http://127.0.0.1:7860")
    token = made["share_url"].split("share=")[1]
    guest = session_handlers.page_load(web, "g" * 32, f"?share={token}", "hash-guest")
    assert_plain(guest["banner"], TITLE)
    assert_plain(guest["image_info"], "[f](https:evil.example).png")
    for message in guest["chat"]:
        assert_plain(message["content"])
    assert TITLE in html.unescape(guest["chat"][0]["content"])
    assert TITLE in html.unescape(guest["chat"][1]["content"])  # the model's answer
    opened = session_handlers.open_session(web, view["session_id"], owner)
    assert_plain(opened["status"], TITLE)


def test_review_text_and_exports_carry_no_markup(web, tmp_path):
    owner, view = _session_with(web, tmp_path)
    reviewer = web.call(
        lambda db: Actor(
            user_id=create_user(
                db, username="rev", password="a long password", role=Role.reviewer
            ).id,
            role=Role.reviewer,
        )
    )
    state = actor_state(reviewer, "rev")
    queue = review_handlers.load_queue(web, state)
    turn_id = queue["review_pick"]["value"]
    shown = review_handlers.show_item(web, turn_id, state)
    assert_plain(shown["review_text"], TITLE)
    web.call(
        rate_turn,
        actor=reviewer,
        turn_id=turn_id,
        text_score=3,
        text_correct=None,
        mask_verdicts=["good"],
        comment=HOSTILE[1],
    )
    # Exports are data: the text exactly as stored (no HTML entities), formulas neutralised.
    row = json.loads(web.call(export_ratings, actor=reviewer, fmt="jsonl").splitlines()[0])
    assert row["question"] == TITLE and row["answer"] == TITLE and row["comment"] == HOSTILE[1]


@pytest.fixture(scope="module")
def wire() -> Iterator[Tripwire]:
    with tripwire() as made:
        yield made


@pytest.fixture(scope="module")
def app(tmp_path_factory, wire) -> Iterator[Live]:
    image = f"![x]({wire.url('/t.png')})"

    def predictor() -> FakePredictor:
        return FakePredictor(answer=f"{image} [click](https://evil.example/answer)")

    with live_app(tmp_path_factory.mktemp("user-text"), predictor) as live:
        yield live


@pytest.mark.browser
def test_a_share_page_in_chromium_shows_hostile_text_as_text(app, wire, chromium, tmp_path):
    title = f"![x]({wire.url('/t.png')}) [click](https://evil.example)"
    owner = Client(app.url, verbose=False)
    made = owner.predict(
        handle_file(write_png(tmp_path / "scan.png", 60, 40, seed=2)),
        "",
        2,
        -1,
        title,
        api_name="/upload",
    )
    answer = owner.predict(made["session_id"], title, "", True, api_name="/ask")
    assert answer["status"] == "succeeded"
    link = owner.predict(made["session_id"], "view", 24, False, api_name="/share")
    context = chromium.new_context(viewport={"width": 1400, "height": 1100})
    try:
        page = context.new_page()
        page.set_default_timeout(BROWSER_TIMEOUT_MS)
        page.goto(link["url"].replace("http://127.0.0.1:7860/", app.url))
        page.wait_for_function(
            "() => (document.querySelector('#medplib-chat')?.innerText ?? '')"
            ".includes('evil.example/answer')"
        )
        page.wait_for_timeout(500)  # any image the page would load has been requested
        assert page.locator(f"img[src*='127.0.0.1:{wire.port}']").count() == 0
        assert page.locator("a[href*='evil.example']").count() == 0
        banner = page.inner_text("#medplib-banner")
        chat = page.inner_text("#medplib-chat")
        assert "[click](https://evil.example)" in banner
        assert f"![x]({wire.url('/t.png')})" in chat
    finally:
        context.close()
    assert wire.hits == []


def test_popups_show_user_text_as_text(monkeypatch):
    """Gradio's pop-ups render HTML (a link or an image in a message would be live): every
    message the page pops up is escaped, while API clients and status lines get the plain
    sentence."""
    import gradio as gr

    from webapp.handlers.common import UserFacingError, warn

    hostile = "<img src=http://127.0.0.1:1/t.png> <a href='https://evil.example'>x</a> & <region>"
    shown: list[str] = []
    monkeypatch.setattr(gr, "Warning", lambda message, *a, **k: shown.append(message))
    warn(f"Could not open {hostile}.")
    refused = UserFacingError(f"Could not open {hostile}.")
    for popup in (shown[0], refused.message):
        assert "<img" not in popup and "<a " not in popup and "<region>" not in popup
        assert html.unescape(popup) == f"Could not open {hostile}."
    assert str(refused) == f"Could not open {hostile}."
