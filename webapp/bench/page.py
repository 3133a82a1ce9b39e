"""`medplib bench page`: how long the page itself takes, measured in headless Chromium.

The app runs in this process (embedded mode, SQLite in a scratch folder) with a stand-in
model that answers after a fixed latency L, so everything above L is the platform's and the
page's own time. One browser tab uploads an image, draws a box on the prompter and asks
questions one after another. Times are taken by the browser's own clock
(``performance.now()``), from the Ask click to:

- the question visible in the chat (``question_visible``),
- the answer visible in the chat (``answer_visible``; ``answer_overhead`` = that minus L),

and, for a share link, from navigation start to the chat showing the shared conversation
(``share_open``). A main thread blocked by the page shows up in all of them.

Needs the dev extras (Playwright) and Debian's Chromium at ``/usr/bin/chromium``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform as host
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# Resolves with {question_ms, answer_ms} after clicking Ask, timed in the page.
ASK_JS = """
([question, answer]) => new Promise((resolve, reject) => {
  const chat = document.querySelector("#medplib-chat");
  const seen = {};
  const start = performance.now();
  const check = () => {
    const text = chat.innerText;
    if (seen.question === undefined && text.includes(question)) {
      seen.question = performance.now() - start;
    }
    if (seen.answer === undefined && text.includes(answer)) {
      seen.answer = performance.now() - start;
    }
    if (seen.question !== undefined && seen.answer !== undefined) {
      observer.disconnect();
      resolve({question_ms: seen.question, answer_ms: seen.answer});
    }
  };
  const observer = new MutationObserver(check);
  observer.observe(chat, {subtree: true, childList: true, characterData: true});
  setTimeout(() => { observer.disconnect(); reject(new Error("no answer in 60 s")); }, 60000);
  document.querySelector("#medplib-ask").click();
})
"""


def register(bsub: Any) -> None:
    p = bsub.add_parser("page", help="the page's own time in Chromium: Ask → chat, share links")
    p.add_argument("--questions", type=int, default=20, help="questions asked in one tab")
    p.add_argument("--shares", type=int, default=5, help="share links opened")
    p.add_argument(
        "--model-seconds", type=float, default=0.2, help="stand-in model time per answer (L)"
    )
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.questions < 1 or args.shares < 0:
        print("medplib bench page: error: --questions must be at least 1", file=sys.stderr)
        return 2
    if not Path(CHROMIUM).exists():
        print(
            f"medplib bench page: error: Chromium is not installed at {CHROMIUM}", file=sys.stderr
        )
        return 2
    # Gradio's own messages go to stderr: stdout carries the JSON alone.
    with contextlib.redirect_stdout(sys.stderr):
        result = run(questions=args.questions, shares=args.shares, model_s=args.model_seconds)
    print(json.dumps(result, indent=2))
    return 0


def summary(values_ms: list[float]) -> dict[str, float]:
    from serving.bench.stats import percentile

    return {
        "n": len(values_ms),
        "p50_ms": round(percentile(values_ms, 50), 1),
        "p95_ms": round(percentile(values_ms, 95), 1),
        "max_ms": round(max(values_ms), 1) if values_ms else float("nan"),
    }


def run(*, questions: int, shares: int, model_s: float) -> dict[str, Any]:
    from gradio_client import Client
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as scratch, _app(Path(scratch), model_s) as url:
        image = Path(scratch) / "phantom.png"
        _phantom(image)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(url)
            page.wait_for_selector("#medplib-upload input[type=file]", state="attached")
            page.set_input_files("#medplib-upload input[type=file]", str(image))
            surface = page.locator("#medplib-prompter svg.mp-overlay").first
            surface.wait_for(state="visible")
            time.sleep(0.3)  # the image sizes itself to the column
            box = surface.bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6, steps=5)
            page.mouse.up()
            page.wait_for_function(
                "document.querySelector('#medplib-regions').innerText.includes('region 1: box')"
            )
            timings = []
            for i in range(questions):
                # Names no region: the box goes with the first question only (then it is saved).
                question = f"Describe the image, please ({i})"
                page.fill("#medplib-question textarea", question)
                timings.append(page.evaluate(ASK_JS, [question, f"noop answer to: {question}"]))
                # The next question may go once the Ask button is enabled again.
                page.wait_for_function("!document.querySelector('#medplib-ask').disabled")
            share_ms = _share_opens(browser, Client(url, verbose=False), image, url, shares)
            browser.close()
    question_ms = [t["question_ms"] for t in timings]
    answer_ms = [t["answer_ms"] for t in timings]
    return {
        "benchmark": "page",
        "command": f"medplib bench page --questions {questions} --shares {shares} "
        f"--model-seconds {model_s} --json",
        "machine": {"cpus": _cpus(), "platform": host.platform(), "python": host.python_version()},
        "model_seconds": model_s,
        "question_visible": summary(question_ms),
        "answer_visible": summary(answer_ms),
        "answer_overhead": summary([a - model_s * 1000.0 for a in answer_ms]),
        "share_open": summary(share_ms),
    }


def _share_opens(browser: Any, client: Any, image: Path, url: str, count: int) -> list[float]:
    from gradio_client import handle_file

    made = client.predict(handle_file(str(image)), "", 2, -1, "bench", api_name="/upload")
    client.predict(made["session_id"], "What is shown?", "", True, api_name="/ask")
    link = client.predict(made["session_id"], "view", 24, False, api_name="/share")["url"]
    opened = []
    for _ in range(count):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(link, wait_until="commit")
        page.wait_for_function(
            "document.querySelector('#medplib-chat')?.innerText.includes('noop answer to')",
            timeout=60_000,
        )
        opened.append(page.evaluate("performance.now()"))
        page.close()
    return opened


class _app:
    """The web app and its embedded runner in this process, on a free port."""

    def __init__(self, root: Path, model_s: float) -> None:
        self.root, self.model_s = root, model_s

    def __enter__(self) -> str:
        import socket

        from alembic import command

        from serving.migrate import alembic_config
        from serving.settings import Settings
        from webapp.commands import create_app, launch

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        url = f"sqlite:///{self.root / 'bench.db'}"
        command.upgrade(alembic_config(url), "head")
        settings = Settings(
            database_url=url,
            artefact_dir=self.root / "artefacts",
            predictor="noop",
            noop_delay_s=self.model_s,
            port=port,
            # One tab asks back to back: the anonymous per-minute limits would stop it.
            anon_jobs_per_minute=10_000,
            anon_jobs_per_address_per_minute=0,
        )
        self.demo, self.platform = create_app(settings)
        self.platform.runner.start()
        launch(self.demo, settings, prevent_thread_lock=True)
        return f"http://127.0.0.1:{port}/"

    def __exit__(self, *exc: object) -> None:
        self.demo.close()
        self.platform.runner.stop()


def _phantom(path: Path) -> None:
    """A 512 x 512 CT-like disc: a realistic canvas size, a few kB of PNG."""
    yy, xx = np.mgrid[:512, :512]
    disc = ((yy - 256) ** 2 / 200**2 + (xx - 256) ** 2 / 230**2) < 1
    Image.fromarray((disc * 120 + 20).astype(np.uint8)).convert("RGB").save(path)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
