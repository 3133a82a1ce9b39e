"""In headless Chromium: an answer appears word by word while the model generates it.

Embedded (the model in the web process) and distributed (a real `medplib worker` process
publishing its text on Redis, the web process relaying it to the page).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from serving.settings import Settings
from tests.processes import start_worker, stop_worker
from tests.serving.conftest import migrate
from tests.webapp.browsing import upload, wait_for_text
from tests.webapp.conftest import FakePredictor, free_port, live_server, phantom_png

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

ANSWER = "The lesion sits in the right upper lobe, close to the pleura, about two centimetres wide."


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    def predictor() -> FakePredictor:
        # Sixteen words over 3.2 s: a word every 0.2 s, as a slow model emits tokens.
        return FakePredictor(answer=ANSWER, delay_s=3.2)

    with live_server(tmp_path_factory.mktemp("stream"), predictor) as address:
        yield address


def ask_and_watch(
    chromium, address: str, image: Path, question: str, *, first_words: str, answer: str
) -> None:
    """Ask; see some words with the streaming cursor while the job runs, then the answer."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        page.goto(address)
        page.wait_for_selector("#medplib-upload input[type=file]", state="attached")
        upload(page, image)
        page.fill("#medplib-question textarea", question)
        page.click("#medplib-ask")
        wait_for_text(page, "#medplib-chat", first_words + r"[^\n]*▍")
        partial = page.inner_text("#medplib-chat")
        status = page.inner_text("#medplib-status")
        assert answer not in partial and "answered" not in status
        wait_for_text(page, "#medplib-status", "answered")
        final = page.inner_text("#medplib-chat")
        assert answer in final and "▍" not in final
    finally:
        context.close()


def test_partial_text_shows_before_the_answer_is_stored(chromium, slow_server, tmp_path):
    image = phantom_png(tmp_path / "ct.png", 320, 256)
    ask_and_watch(
        chromium,
        slow_server,
        image,
        "Where is the lesion?",
        first_words="The lesion sits in",
        answer=ANSWER,
    )


@contextmanager
def distributed_server(root: Path, postgres_url: str, redis_url: str) -> Iterator[str]:
    """PostgreSQL, Redis, one `medplib worker` process (the noop model streaming its words
    over 3 s) and the web app in this process; yields the app's URL."""
    from webapp.commands import create_app, launch

    migrate(postgres_url)
    settings = Settings(
        database_url=postgres_url,
        broker_url=redis_url,
        predictor="noop",
        artefact_dir=root / "artefacts",
        port=free_port(),
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDPLIB_")},
        "MEDPLIB_DATABASE_URL": postgres_url,
        "MEDPLIB_BROKER_URL": redis_url,
        "MEDPLIB_PREDICTOR": "noop",
        "MEDPLIB_NOOP_DELAY_S": "3.0",
        "MEDPLIB_ARTEFACT_DIR": str(root / "artefacts"),
    }
    worker = start_worker(env, root / "worker.log", "--loglevel", "WARNING")
    demo, platform = create_app(settings)
    platform.runner.start()
    try:
        assert platform.runner.relay.connected.wait(10), "the web process never reached Redis"
        launch(demo, settings, prevent_thread_lock=True)
        yield f"http://127.0.0.1:{settings.port}/"
    finally:
        demo.close()
        platform.runner.stop()
        stop_worker(worker)


@pytest.mark.integration
def test_partial_text_from_a_celery_worker_shows_before_the_answer(
    chromium, postgres_url, redis_url, tmp_path
):
    question = "Where is the lesion in this scan?"
    # The noop model answers "noop answer to: <question>", a word every 0.3 s.
    with distributed_server(tmp_path, postgres_url, redis_url) as address:
        ask_and_watch(
            chromium,
            address,
            phantom_png(tmp_path / "ct.png", 320, 256),
            question,
            first_words="noop answer to:",
            answer=f"noop answer to: {question}",
        )
