"""Small drivers for handler tests: identities, uploads, and a finished question."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from serving.models import Role
from serving.services.accounts import create_user
from webapp.handlers import chat, sessions, upload
from webapp.handlers.common import Web, actor_state, empty_view


def browser(web: Web, key: str, query: str = "") -> dict[str, Any]:
    """What a browser with localStorage key ``key`` gets on page load."""
    return sessions.page_load(web, key, query, session_hash="hash" + key[:8])


def user(web: Web, name: str, role: Role) -> dict[str, Any]:
    def body(db: Any) -> dict[str, Any]:
        made = create_user(db, username=name, password="a long password", role=role)
        from serving.services.accounts import Actor

        return actor_state(Actor(user_id=made.id, role=role), name)

    return web.call(body)


def uploaded(web: Web, path: str, view: dict | None = None, drawn: list | None = None) -> dict:
    return upload.upload(
        web, path, "default", 2, 0, view or empty_view(), drawn or [], new_file=True
    )


def run_ask(
    web: Web,
    question: str,
    prompter: Any,
    editor: Any,
    view: dict,
    actor: dict,
    chat_value: list | None = None,
    on_first: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Every value the ask generator yields, in order, until the job ends.

    `on_first` runs once the first value is out: a test that must see the job still queued
    creates its platform with the runner stopped and passes ``platform.runner.start``.
    """

    async def drain() -> list[dict[str, Any]]:
        outputs = []
        async for out in chat.ask(
            web, question, prompter, editor, view, actor, chat_value or [], "hash"
        ):
            outputs.append(out)
            if on_first is not None and len(outputs) == 1:
                on_first()
        return outputs

    return asyncio.run(drain())


def ask_box(
    web: Web,
    path: str,
    actor: dict,
    question: str = "What is in region 1?",
    rows: list | None = None,
) -> dict[str, Any]:
    """Upload an image, draw a box, ask; return the screen as the page ends up showing it."""
    screen = uploaded(web, path)
    prompter = {"image": None, "points": rows or [[10.0, 8.0, 2.0, 30.0, 24.0, 3.0]]}
    return settled(run_ask(web, question, prompter, None, screen["view"], actor))


def settled(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each output's last value over a streamed event: what the page shows when it ends."""
    final: dict[str, Any] = {}
    for values in outputs:
        final.update(values)
    return final
