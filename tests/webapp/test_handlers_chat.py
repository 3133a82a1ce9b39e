"""Upload, ask, answer details and reopening, through the handlers on a migrated SQLite."""

from __future__ import annotations

import html
import json

import numpy as np
from sqlalchemy import func, select

from medplib.masks import decode_rle, png_bytes_to_mask
from serving.models import ChatSession, Image, Turn
from serving.views import MaskData, turn_data
from tests.webapp.conftest import FakePredictor, write_png
from tests.webapp.helpers import ask_box, browser, run_ask, settled, uploaded
from webapp import render
from webapp.handlers import api, chat, sessions
from webapp.handlers.common import Web
from webapp.handlers.screen import MIRROR_NOTE, canvas_values, masks_legend


def _count(web: Web, model) -> int:
    return web.call(lambda db: db.scalar(select(func.count()).select_from(model)))


def test_upload_shows_the_image_on_both_canvases(web, tmp_path):
    out = uploaded(web, write_png(tmp_path / "scan.png", 60, 40))
    view = out["view"]
    assert (view["width_px"], view["height_px"]) == (60, 40) and view["session_id"] is None
    # The canvases are emptied, then filled by a follow-up event (see webapp.ui.canvas).
    assert out["prompter"] is None and out["editor"] is None and out["file"] is None
    filled = canvas_values(web, view)
    prompter = filled["prompter"]["value"]
    assert prompter["image"].shape == (40, 60, 3) and prompter["points"] == []
    assert filled["prompter"]["first_label"] == 1
    assert filled["editor"]["background"].shape == (40, 60, 3) and filled["editor"]["layers"] == []
    assert "scan.png" in out["image_info"] and "60×40" in out["image_info"]
    assert _count(web, Image) == 1 and _count(web, ChatSession) == 0


def test_bad_uploads_give_one_message_and_store_nothing(make_platform, tmp_path):
    web = Web(make_platform(max_image_pixels=1000))
    junk = tmp_path / "notes.png"
    junk.write_bytes(b"this is not an image at all")
    out = uploaded(web, str(junk))
    assert set(out) == {"status", "file"} and "not an image" in out["status"]
    big = uploaded(web, write_png(tmp_path / "big.png", 60, 40))  # 2400 px > 1000
    assert (
        set(big) == {"status", "file"}
        and "60x40 pixels" in big["status"]
        and "limit" in big["status"]
    )
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    assert "empty" in uploaded(web, str(empty))["status"]
    assert _count(web, Image) == 0


def test_replacing_the_image_clears_regions_with_a_message(web, tmp_path):
    first = uploaded(web, write_png(tmp_path / "a.png", seed=1))
    drawn = [{"kind": "point", "xy_px": [3, 3], "label": 1}] * 2
    second = uploaded(web, write_png(tmp_path / "b.png", seed=2), first["view"], drawn)
    assert "The 2 regions drawn on the previous image were cleared." in second["status"]
    assert second["drawn"] == [] and second["prompter"] is None
    assert second["view"]["image_id"] != first["view"]["image_id"]


def test_ask_streams_status_then_shows_answer_overlay_and_downloads(make_platform, tmp_path):
    platform = make_platform(start_runner=False)  # started once the first status is out
    web = Web(platform)
    actor = browser(web, "k" * 32)["actor"]
    screen = uploaded(web, write_png(tmp_path / "scan.png", 60, 40))
    prompter = {"image": None, "points": [[10.0, 8.0, 2.0, 30.0, 24.0, 3.0]]}
    outputs = run_ask(
        web,
        "What is in region 1?",
        prompter,
        None,
        screen["view"],
        actor,
        on_first=platform.runner.start,
    )
    first, final = outputs[0], outputs[-1]
    assert first["question"] == "" and "queued" in first["status"]
    # Shown as typed: brackets are character references, so no Markdown link can form.
    assert first["chat"][-2]["content"] == "What is in &#91;region 1&#93;?"
    assert final["status"] == "answered"
    # The model saw a tag per region; the answer is shown escaped.
    assert final["chat"][-1] == {
        "role": "assistant",
        "content": "answer to: What is in &lt;region&gt;?",
    }
    # Two masks: the predictor's quarter and the echoed box; each in its palette colour.
    legend = final["legend"]
    assert "mask 1" in legend and "mask 2" in legend and "score 0.75" in legend
    # Only the model's mask had a mirror check, and the legend says so for it alone.
    assert legend.count("mirror agreement") == 1 and "mirror agreement 0.92" in legend
    assert "flipped left to right" in legend  # what the number means, once
    overlay = final["overlay"]
    assert overlay.shape == (40, 60, 3)
    assert tuple(overlay[0, 0]) == render.PALETTE[0]  # outline of the quarter mask
    assert "untrained demo model" in final["badge"]
    assert final["routing"] is not None and final["routing"].ndim == 3
    files = list(final["downloads"])
    assert [f.rsplit("-", 1)[-1] for f in files] == [
        "mask1.png",
        "mask1.rle.json",
        "mask2.png",
        "mask2.rle.json",
    ]
    box = png_bytes_to_mask(open(files[2], "rb").read())
    assert box.shape == (40, 60) and box[8:24, 10:30].all() and box.sum() == 20 * 16
    doc = json.load(open(files[3]))
    assert np.array_equal(decode_rle(doc["rle"]), box) and doc["area_px"] == 320
    assert doc["mirror_agreement"] is None
    assert json.load(open(files[1]))["mirror_agreement"] == 0.92


def test_the_answer_marks_where_its_mask_was_produced(make_platform, tmp_path):
    fake = FakePredictor(answer="It is the liver.", raw_answer="It is the liver <SEG>.")
    web = Web(make_platform(predictor=fake))
    actor = browser(web, "m" * 32)["actor"]
    screen = uploaded(web, write_png(tmp_path / "scan.png", 60, 40))
    final = settled(run_ask(web, "Segment the liver.", None, None, screen["view"], actor))
    assert final["status"] == "answered"
    assert final["chat"][-1]["content"] == "It is the liver &#91;mask 1&#93;."
    # Stored as the model gave it: the mark is only how the page shows it.
    stored = web.call(lambda db: db.scalar(select(Turn.answer)))
    assert stored == "It is the liver."
    # API clients get both.
    turn = web.call(lambda db: api.turn_json(turn_data(db.scalar(select(Turn)))))
    assert turn["answer"] == "It is the liver."
    assert turn["answer_with_marks"] == "It is the liver [mask 1]."


def _mask(index: int, *, score: float | None, mirror_agreement: float | None) -> MaskData:
    return MaskData(
        index=index,
        rle={},
        png_key="k",
        area_px=1234,
        bbox_xyxy_px=None,
        score=score,
        mirror_agreement=mirror_agreement,
    )


def test_legend_explains_the_mirror_number_only_where_one_is_shown():
    checked = masks_legend(
        [
            _mask(0, score=0.91, mirror_agreement=0.0),
            _mask(1, score=None, mirror_agreement=None),
        ]
    )
    # A side-named structure's mirror lands on the other side: 0.00 is shown as it is.
    assert "mask 1</b> 1,234 px, score 0.91, mirror agreement 0.00" in checked
    assert "mask 2</b> 1,234 px</li>" in checked
    assert checked.count("left to right") == 1 and MIRROR_NOTE.split(":")[0] in checked
    plain = masks_legend([_mask(0, score=0.5, mirror_agreement=None)])
    assert "mirror" not in plain.lower() and "score 0.50" in plain
    assert "did not ask for one" in masks_legend([])


def test_question_over_the_limit_is_refused_and_nothing_is_stored(make_platform, tmp_path):
    web = Web(make_platform(max_question_chars=20))
    actor = browser(web, "q" * 32)["actor"]
    screen = uploaded(web, write_png(tmp_path / "scan.png"))
    outputs = run_ask(web, "x" * 21, None, None, screen["view"], actor)
    assert len(outputs) == 1 and "limit is 20" in outputs[0]["status"]
    assert _count(web, Turn) == 0
    # A reference to a region that is not drawn is refused before anything is stored too.
    outputs = run_ask(web, "what is <region>?", None, None, screen["view"], actor)
    assert "no region is drawn" in outputs[0]["status"] and _count(web, ChatSession) == 0


def test_asking_without_an_image_says_so(web):
    actor = browser(web, "n" * 32)["actor"]
    outputs = run_ask(web, "hello?", None, None, {"image_id": None}, actor)
    assert outputs == [{"status": "⚠ Upload an image first."}]


def test_reopening_restores_image_regions_answers_and_masks(web, tmp_path):
    page = browser(web, "r" * 32)
    final = ask_box(web, write_png(tmp_path / "scan.png", 60, 40), page["actor"])
    session_id = final["view"]["session_id"]
    # A reload: the same browser key, a fresh page.
    again = browser(web, "r" * 32)
    table = again["sessions_table"]
    assert [row[-1] for row in table] == [session_id] and table[0][1] == 1
    opened = sessions.open_session(web, session_id, again["actor"])
    box = {"kind": "box", "xyxy_px": [10.0, 8.0, 30.0, 24.0], "label": 1}
    assert opened["drawn"] == [box] and opened["view"]["saved"] == [box]
    assert "region 1: box (10, 8)–(30, 24) px (saved)" in opened["regions_md"]
    # The saved box is burnt into the canvas image; no prompts sit on the canvas.
    filled = canvas_values(web, opened["view"])
    prompter = filled["prompter"]["value"]
    assert prompter["points"] == []
    assert tuple(prompter["image"][8, 20]) == render.SAVED_REGION_RGB
    # New prompts are numbered after the saved region on the canvas too.
    assert filled["prompter"]["first_label"] == 2
    # Asking again sends the saved region unchanged.
    outputs = run_ask(web, "and region 1?", prompter, None, opened["view"], again["actor"])
    assert outputs[-1]["status"] == "answered" and settled(outputs)["drawn"] == [box]
    assert opened["chat"] == final["chat"]
    assert np.array_equal(opened["overlay"], final["overlay"])
    assert opened["turn_pick"]["value"] == 0
    # Another browser cannot open it, nor fetch its masks.
    stranger = browser(web, "s" * 32)["actor"]
    refused = sessions.open_session(web, session_id, stranger)
    assert set(refused) == {"status"} and "does not exist" in refused["status"]
    details = chat.show_turn(web, 0, 0.5, {"session_id": session_id}, stranger)
    assert details["downloads"] is None and "does not exist" in details["status"]


def test_opacity_changes_the_overlay_only(web, tmp_path):
    actor = browser(web, "o" * 32)["actor"]
    final = ask_box(web, write_png(tmp_path / "scan.png", 60, 40), actor)
    faint = chat.show_turn(web, 0, 0.0, final["view"], actor)
    strong = chat.show_turn(web, 0, 1.0, final["view"], actor)
    inside = (5, 5)  # inside the quarter mask, away from its outline
    assert tuple(strong["overlay"][inside]) == render.PALETTE[0]
    assert tuple(faint["overlay"][inside]) != render.PALETTE[0]
    assert faint["legend"] == strong["legend"]


def test_cancel_stops_a_running_question_and_says_so(make_platform, tmp_path):
    import asyncio

    from tests.webapp.conftest import FakePredictor

    web = Web(make_platform(predictor=FakePredictor(delay_s=5.0)))
    actor = browser(web, "c" * 32)["actor"]
    screen = uploaded(web, write_png(tmp_path / "scan.png"))

    async def ask_then_cancel() -> tuple[dict, list[dict]]:
        stream = chat.ask(web, "slow?", None, None, screen["view"], actor, [], "hash")
        first = await stream.__anext__()
        cancelled = chat.cancel(web, first["view"], actor)
        return cancelled, [first] + [out async for out in stream]

    cancelled, outputs = asyncio.run(ask_then_cancel())
    assert cancelled == {"status": "cancelled"}
    final = outputs[-1]
    assert final["status"] == "cancelled" and final["view"]["job_id"] is None
    assert final["chat"][-1]["content"] == "*cancelled*"
    assert final["ask_btn"]["interactive"] is True
    web.platform.runner.wait_idle(30)
    # The model finishing later does not bring the answer back.
    again = sessions.open_session(web, final["view"]["session_id"], actor)
    assert again["chat"][-1]["content"] == "*cancelled*" and again["turn_pick"]["choices"] == []


def test_reopening_a_session_mid_question_follows_it_to_the_answer(make_platform, tmp_path):
    import asyncio

    from tests.webapp.conftest import FakePredictor

    web = Web(make_platform(predictor=FakePredictor(delay_s=1.5)))
    actor = browser(web, "f" * 32)["actor"]
    screen = uploaded(web, write_png(tmp_path / "scan.png"))

    async def ask_then_leave() -> dict:
        stream = chat.ask(web, "still there?", None, None, screen["view"], actor, [], "hash")
        first = await stream.__anext__()
        await stream.aclose()  # the tab is closed: nobody polls this job any more
        return first

    first = asyncio.run(ask_then_leave())
    # A reload opens the session while the model still works on the question.
    reopened = sessions.open_session(web, first["view"]["session_id"], actor)
    assert reopened["view"]["job_id"] == first["view"]["job_id"]
    assert reopened["ask_btn"]["interactive"] is False
    assert reopened["chat"][-1]["content"].startswith("*")  # a status, not an answer yet

    async def drain() -> list[dict]:
        return [out async for out in chat.follow(web, reopened["view"], actor, reopened["chat"])]

    outputs = asyncio.run(drain())
    assert outputs[0]["cancel_btn"]["visible"] is True
    final = outputs[-1]
    assert final["status"] == "answered" and final["view"]["job_id"] is None
    assert final["chat"][-1]["content"] == "answer to: still there?"
    assert final["ask_btn"]["interactive"] is True
    # A session with nothing running has nothing to follow.
    idle = asyncio.run(drain_idle(web, final["view"], actor))
    assert idle == [{"status": {"__type__": "update"}}]  # changes nothing on the page


async def drain_idle(web: Web, view: dict, actor: dict) -> list[dict]:
    return [out async for out in chat.follow(web, view, actor, [])]


def test_progress_is_reported_while_the_model_runs(make_platform, tmp_path):
    from tests.webapp.conftest import FakePredictor

    platform = make_platform(predictor=FakePredictor(delay_s=1.2), start_runner=False)
    web = Web(platform)
    actor = browser(web, "p" * 32)["actor"]
    screen = uploaded(web, write_png(tmp_path / "scan.png"))
    outputs = run_ask(
        web, "slow?", None, None, screen["view"], actor, on_first=platform.runner.start
    )
    statuses = [out["status"] for out in outputs]
    assert statuses[0] == "queued (position 1)"  # the runner starts only after this one
    assert "running: decoding (50 %)" in statuses
    assert statuses[-1] == "answered"
    # The model's progress shows in the chat until its text streams in, word by word.
    running = [out["chat"][-1]["content"] for out in outputs if out["status"].startswith("running")]
    assert "*running: decoding (50 %)*" in running
    streamed = [c for c in running if c.endswith("▍")]
    assert streamed[0] == "answer ▍" and streamed[-1] == "answer to: slow? ▍"
    assert outputs[-1]["chat"][-1]["content"] == "answer to: slow?"


def test_progress_reported_before_the_page_listens_is_still_shown(make_platform, tmp_path):
    """The runner can claim a job and report progress before the page subscribes to its notices.

    Those notices reach nobody, so the page must read the job once it listens; otherwise it
    shows "queued" until the answer is stored.
    """
    import threading

    from tests.webapp.conftest import FakePredictor

    reported = threading.Event()

    class ReportsThenWaits(FakePredictor):
        def ask(self, question, regions=(), history=(), *, progress=None, on_text=None):
            def progress_then_signal(phase: str, fraction: float) -> None:
                progress(phase, fraction)  # stored and announced before the signal
                reported.set()

            return super().ask(
                question, regions, history, progress=progress_then_signal, on_text=on_text
            )

    platform = make_platform(predictor=ReportsThenWaits(delay_s=0.9), start_runner=False)
    web = Web(platform)
    actor = browser(web, "r" * 32)["actor"]
    screen = uploaded(web, write_png(tmp_path / "scan.png"))

    def start_and_wait_for_progress() -> None:
        platform.runner.start()
        assert reported.wait(10.0)  # the page has not subscribed yet: it resumes after this

    outputs = run_ask(
        web, "fast?", None, None, screen["view"], actor, on_first=start_and_wait_for_progress
    )
    statuses = [out["status"] for out in outputs]
    assert statuses[0] == "queued (position 1)"
    assert statuses[1] == "running: decoding (50 %)"
    assert statuses[-1] == "answered"


def test_asked_regions_become_saved_once_and_keep_their_numbers(web, tmp_path):
    actor = browser(web, "k" * 32)["actor"]
    screen = uploaded(web, write_png(tmp_path / "ct.png", 60, 40))
    box_rows = [[10.0, 8.0, 2.0, 30.0, 24.0, 3.0]]
    first = run_ask(
        web,
        "What is in region 1?",
        {"image": None, "points": box_rows},
        None,
        screen["view"],
        actor,
    )
    # Right after the question is queued: the box is saved, the canvas holds no prompts and
    # numbers new ones from 2.
    queued = first[0]
    box = {"kind": "box", "xyxy_px": [10.0, 8.0, 30.0, 24.0], "label": 1}
    assert queued["view"]["saved"] == [box] and queued["drawn"] == [box]
    assert queued["prompter"]["value"]["points"] == [] and queued["prompter"]["first_label"] == 2
    assert "region 1: box (10, 8)–(30, 24) px (saved)" in queued["regions_md"]
    page = settled(first)

    # The canvas now sends only what was drawn since: a point. A question naming no region
    # takes the new point, never the saved box, and nothing is stored twice.
    point_rows = [[50.0, 30.0, 1.0, 0.0, 0.0, 4.0]]
    second = settled(
        run_ask(
            web,
            "Please segment the heart in this image.",
            {"image": None, "points": point_rows},
            None,
            page["view"],
            actor,
        )
    )
    point = {"kind": "point", "xy_px": [50.0, 30.0], "label": 2}
    assert second["drawn"] == [box, point] and second["view"]["saved"] == [box, point]
    session = sessions.open_session(web, second["view"]["session_id"], actor)
    assert session["drawn"] == [box, point]
    chat_text = html.unescape(" ".join(m["content"] for m in second["chat"]))
    assert "Please segment the heart in this image. [region 2]" in chat_text

    # With nothing new drawn, an unnamed question is sent with no region at all.
    third = settled(
        run_ask(
            web, "Is there a nodule?", {"image": None, "points": []}, None, second["view"], actor
        )
    )
    assert third["chat"][-2]["content"] == "Is there a nodule?"
    assert third["drawn"] == [box, point]
