"""The arena tab through its handlers: blind answers, one vote, names after it, the
leaderboard, the admins' checkpoint choices; and the arena's API handlers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import gradio as gr
import numpy as np
import pytest

from serving.models import Role
from serving.platform import build_platform
from serving.predictors import PredictorHolder
from serving.settings import Settings
from tests.webapp.conftest import FakePredictor, migrate, write_png
from tests.webapp.helpers import browser, uploaded, user
from webapp.handlers import api, arena
from webapp.handlers.common import Web

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _corner(h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[-h // 4 :, -w // 4 :] = True  # the bottom-right sixteenth
    return mask


@pytest.fixture
def web(tmp_path) -> Iterator[Web]:
    """Checkpoints good (the default: a quarter mask) and bad (a corner mask)."""
    url = f"sqlite:///{tmp_path / 'medplib.db'}"
    migrate(url)
    settings = Settings(
        database_url=url, artefact_dir=tmp_path / "artefacts", checkpoints="good=/g,bad=/b"
    )
    holders = {
        "good": PredictorHolder(lambda: FakePredictor(answer="left upper quarter")),
        "bad": PredictorHolder(
            lambda: FakePredictor(
                answer="the corner", raw_answer="the corner <SEG>", mask_fn=_corner
            )
        ),
    }
    platform = build_platform(settings, holders=holders)
    platform.runner.start()
    yield Web(platform)
    platform.runner.stop()


def drain(updates: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        return [update async for update in updates]

    return asyncio.run(run())


def _played(web: Web, tmp_path, key: str = "a" * 32) -> tuple[dict, dict, str]:
    """A browser that uploaded an image and started a match: (actor, final screen, match id)."""
    page = browser(web, key)
    view = uploaded(web, write_png(tmp_path / f"{key[0]}.png", 60, 40))["view"]
    started = arena.start(web, "where is it?", view, [], page["actor"], "hash")
    assert started["arena_status"] == "Two checkpoints are answering…"
    assert not any(started[name]["interactive"] for name in arena.VOTE_BUTTONS)
    final = drain(arena.follow(web, started["arena_match"], started["actor"]))[-1]
    return started["actor"], final, started["arena_match"]


def test_answers_side_by_side_without_names_then_one_vote_reveals_them(web, tmp_path):
    actor, final, match_id = _played(web, tmp_path)
    assert (
        final["arena_status"].startswith("Which answer is better?") and final["arena_reveal"] == ""
    )
    assert all(final[name]["interactive"] for name in arena.VOTE_BUTTONS)
    answers = {final["arena_answer_a"].split("\n")[0], final["arena_answer_b"].split("\n")[0]}
    # Where a side's answer produced its mask is marked in the text, as on the Ask page.
    assert answers == {"left upper quarter", "the corner &#91;mask 1&#93;"}
    shown = " ".join(str(final[k]) for k in ("arena_answer_a", "arena_answer_b", "arena_status"))
    assert "good" not in shown and "bad" not in shown and "tiny-untrained" not in shown
    image_a, image_b = final["arena_image_a"], final["arena_image_b"]
    assert image_a.shape == image_b.shape == (40, 60, 3) and not np.array_equal(image_a, image_b)
    a_is_good = final["arena_answer_a"].startswith("left upper")
    voted = arena.cast(web, match_id, "a", actor)
    assert voted["arena_status"] == "You voted: A is better."
    first, second = ("good", "bad") if a_is_good else ("bad", "good")
    assert f"**A** was checkpoint **{first}**" in voted["arena_reveal"]
    assert f"**B** was checkpoint **{second}**" in voted["arena_reveal"]
    assert not any(voted[name]["interactive"] for name in arena.VOTE_BUTTONS)
    ((rank, top, *_), (_, last, *_)) = voted["arena_board"]
    assert (rank, top, last) == (1, first, second)
    assert voted["arena_matrix"]["data"][0][:2] == [first, "—"]
    again = arena.cast(web, match_id, "b", actor)
    assert "already voted on this match (A is better)" in again["arena_status"]
    assert "arena_reveal" not in again  # the screen keeps what it shows


def test_refusals_say_why_and_keep_the_question(web, tmp_path):
    page = browser(web, "n" * 32)
    empty = arena.start(web, "where?", page.get("view") or _no_image(), [], page["actor"], "h")
    assert "Upload an image on the Ask tab first" in empty["arena_status"]
    assert empty["arena_pending"] is None
    view = uploaded(web, write_png(tmp_path / "scan.png", 60, 40))["view"]
    blank = arena.start(web, "   ", view, [], page["actor"], "h")
    assert "Type a question" in blank["arena_status"] and "arena_match" not in blank
    assert blank["arena_pending"] is None  # nothing to follow: the refusal stays on screen
    tagged = arena.start(web, "what is <region>?", view, [], page["actor"], "h")
    assert "no region is drawn" in tagged["arena_status"]
    other, _, match_id = _played(web, tmp_path, "p" * 32)
    stranger = browser(web, "s" * 32)["actor"]
    assert "shown to someone else" in arena.cast(web, match_id, "a", stranger)["arena_status"]
    assert "Start a match first" in arena.cast(web, None, "a", other)["arena_status"]


def _no_image() -> dict:
    from webapp.handlers.common import empty_view

    return dict(empty_view())


def test_only_admins_see_and_save_the_checkpoint_choices(web):
    anonymous = browser(web, "z" * 32)["actor"]
    assert arena.admin_panel(web, anonymous) == {"arena_admin": gr.update(visible=False)}
    root = user(web, "root", Role.admin)
    panel = arena.admin_panel(web, root)
    assert panel["arena_admin"]["visible"] and panel["arena_default"]["value"] == "good"
    assert panel["arena_pool"]["choices"] == ["good", "bad"]
    refused = arena.save_choices(web, "good", ["good"], root)
    assert "at least two" in refused["arena_admin_status"]
    assert (
        "admin role"
        in arena.save_choices(web, "bad", ["good", "bad"], anonymous)["arena_admin_status"]
    )
    saved = arena.save_choices(web, "bad", ["bad", "good"], root)
    assert saved["arena_admin_status"].startswith("Saved: new questions go to **bad**")
    assert arena.admin_panel(web, root)["arena_default"]["value"] == "bad"


def test_the_api_plays_a_match_and_refuses_a_second_vote(web, tmp_path):
    page = browser(web, "c" * 32)
    view = uploaded(web, write_png(tmp_path / "scan.png", 60, 40))["view"]
    state, match = asyncio.run(
        api.arena_start(
            web, view["image_id"], "where?", "", '["good", "bad"]', True, page["actor"], "h"
        )
    )
    assert match["finished"] and match["checkpoints"] is None
    assert sorted(len(side["masks"]) for side in match["sides"]) == [1, 1]
    assert [side["masks"][0]["mirror_agreement"] for side in match["sides"]] == [0.92, 0.92]
    voted = api.arena_vote(web, match["match_id"], "both_bad", state, "h")
    assert voted["vote"] == "both_bad" and sorted(voted["checkpoints"]) == ["bad", "good"]
    with pytest.raises(gr.Error, match="already voted"):
        api.arena_vote(web, match["match_id"], "a", state, "h")
    with pytest.raises(gr.Error, match="no checkpoint 'gpt'"):
        asyncio.run(
            api.arena_start(web, view["image_id"], "q", "", '["gpt", "good"]', False, state, "h")
        )
    board = api.arena_leaderboard(web)
    assert board["votes"] == 1 and {r["model"] for r in board["rows"]} == {"good", "bad"}
    assert api.checkpoints(web)["available"] == ["good", "bad"]
    with pytest.raises(gr.Error, match="admin role"):
        api.set_checkpoint_choices(web, "bad", "", state)
