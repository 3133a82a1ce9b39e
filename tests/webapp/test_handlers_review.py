"""Logging in, the review queue, ratings, statistics and exports through the handlers."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from serving.models import Role
from tests.webapp.conftest import write_png
from tests.webapp.helpers import ask_box, browser, user
from webapp.handlers import account, review

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def answered(web, tmp_path):
    asker = browser(web, "a" * 32)["actor"]
    final = ask_box(web, write_png(tmp_path / "scan.png", 60, 40), asker, "<b>which</b> organ?")
    return final


def test_login_switches_the_tab_to_the_account_and_logout_back(web):
    user(web, "rita", Role.reviewer)
    page = browser(web, "k" * 32)
    wrong = account.login(web, "rita", "not the password")
    assert wrong["login_status"] == "⚠ Wrong username or password." and "actor" not in wrong
    ok = account.login(web, "rita", "a long password")
    assert ok["actor"]["role"] == "reviewer" and not ok["actor"]["anonymous"]
    assert "Logged in as **rita** (reviewer)" in ok["account_md"] and ok["password"] == ""
    out = account.logout(web, page["browser_key"])
    assert out["actor"] == page["actor"] and "anonymously" in out["account_md"]


def test_logging_in_takes_the_anonymous_sessions_along(web, tmp_path):
    user(web, "ines", Role.instructor)
    page = browser(web, "m" * 32)
    final = ask_box(web, write_png(tmp_path / "scan.png", 60, 40), page["actor"])
    session_id = final["view"]["session_id"]
    ok = account.login(web, "ines", "a long password", page["actor"])
    assert ok["login_status"] == "1 session from this browser moved to your account."
    assert [row[-1] for row in ok["sessions_table"]] == [session_id]
    # Back to anonymous: the session stays with the account, not with the browser.
    out = account.logout(web, page["browser_key"])
    assert out["sessions_table"] == []
    # Logging in again from an anonymous tab with nothing to bring moves nothing.
    again = account.login(web, "ines", "a long password", out["actor"])
    assert again["login_status"] == "" and len(again["sessions_table"]) == 1
    # A refused login moves nothing either.
    other = browser(web, "o" * 32)
    ask_box(web, write_png(tmp_path / "other.png", 60, 40), other["actor"])
    account.login(web, "ines", "wrong password!", other["actor"])
    assert len(browser(web, "o" * 32)["sessions_table"]) == 1


def test_rating_needs_a_reviewer(web, answered):
    anonymous = browser(web, "z" * 32)["actor"]
    assert "reviewer role" in review.load_queue(web, anonymous)["review_status"]
    turn_id = _first_turn(web, answered)
    refused = review.submit_rating(web, turn_id, 4, "yes", "", ["good", "good"], anonymous)
    assert "reviewer role" in refused["review_status"]
    assert "reviewer role" in review.export(web, "csv", anonymous)["review_status"]
    assert "reviewer role" in review.show_item(web, turn_id, anonymous)["review_status"]


def _first_turn(web, final) -> str:
    from serving.models import Turn

    return web.call(lambda db: db.query(Turn).one().id)


def test_queue_rate_statistics_and_export(web, answered):
    rita = user(web, "rita", Role.reviewer)
    ravi = user(web, "ravi", Role.reviewer)
    queue = review.load_queue(web, rita)
    ((label, turn_id),) = queue["review_pick"]["choices"]
    assert "which" in label and queue["review_pick"]["value"] == turn_id
    item = review.show_item(web, turn_id, rita)
    assert item["verdict_0"]["visible"] and item["verdict_1"]["visible"]
    assert not item["verdict_2"]["visible"]
    assert (
        "&lt;b&gt;which&lt;/b&gt;" in item["review_text"] and "<b>which" not in item["review_text"]
    )
    assert item["review_image"].shape == (40, 60, 3)
    # One verdict per mask: a missing one is refused by the service with its reason.
    short = review.submit_rating(web, turn_id, 4, "yes", "", ["good", None], rita)
    assert "2 mask(s)" in short["review_status"]
    saved = review.submit_rating(web, turn_id, 4, "yes", "=HYPERLINK(x)", ["good", "partly"], rita)
    assert (
        saved["review_status"].startswith("Rating saved.") and not saved["review_pick"]["choices"]
    )
    # The form starts fresh for the next answer; a refused one keeps what was entered.
    assert (saved["review_score"], saved["review_correct"], saved["review_comment"]) == (
        3,
        "unsure",
        "",
    )
    assert "review_comment" not in short
    review.submit_rating(web, turn_id, 2, "no", "", ["wrong", "partly"], ravi)
    stats = review.statistics(web, rita)
    # Readable rows with reviewer names: everyone, then each pair (2 vs 4, no vs yes).
    overall, pair = stats["agreement"]
    assert overall[:2] == ["all reviewers (Fleiss)", 1]
    assert pair[0] in ("rita & ravi (Cohen)", "ravi & rita (Cohen)") and pair[1] == 1
    (row,) = stats["checkpoint_table"]
    assert row[0] == "tiny-untrained-test" and row[1] == 2 and row[2] == 3.0
    # Mask 1 is the model's (score 0.75, mirror agreement 0.92); mask 2 echoes the drawn box
    # and has neither. rita: good, partly; ravi: wrong, partly.
    assert stats["verdict_signals"] == [
        ["good", 1, "0.75", 1, "0.92"],
        ["partly", 2, "n/a", 0, "n/a"],
        ["wrong", 1, "0.75", 1, "0.92"],
    ]
    exported = review.export(web, "csv", rita)
    rows = list(csv.DictReader(io.StringIO(open(exported["export_file"]).read())))
    assert sorted(r["reviewer"] for r in rows) == ["ravi", "rita"]
    assert {r["comment"] for r in rows} == {"'=HYPERLINK(x)", ""}
    lines = open(review.export(web, "jsonl", ravi)["export_file"]).read().splitlines()
    assert sorted(json.loads(line)["text_score"] for line in lines) == [2, 4]


def test_correct_a_mask_in_the_editor_and_see_reviewers_agree(web, answered):
    rita = user(web, "rita", Role.reviewer)
    ravi = user(web, "ravi", Role.reviewer)
    turn_id = _first_turn(web, answered)
    opened = review.open_correction(web, turn_id, 1, rita)
    editor = opened["correction_editor"]
    background = editor["background"]
    assert not editor["layers"][0].any() and "version 0: model" in opened["correction_versions"]
    h, w = background.shape[:2]  # the image as shown; the original is 40 x 60

    def strokes(x0: float, x1: float, y1: float = 0.5) -> dict:
        layer = np.zeros((h, w, 4), dtype=np.uint8)
        layer[: int(y1 * h), int(x0 * w) : int(x1 * w)] = (255, 64, 64, 255)
        return {"background": background, "layers": [layer], "composite": None}

    replace, add, remove = (
        review.CORRECTION_MODES[2],
        review.CORRECTION_MODES[0],
        review.CORRECTION_MODES[1],
    )
    saved = review.save_correction(web, turn_id, 1, replace, strokes(0.0, 0.5, 0.75), rita)
    assert saved["correction_status"] == "Saved as version 1 of mask 1."
    assert "version 1: rita, 900 px" in saved["correction_versions"]  # 30 rows x 30 columns
    # The new version is what the editor shows next: tinted where the strokes were.
    shown = saved["correction_editor"]["background"]
    assert shown.shape == background.shape and not np.array_equal(shown, background)
    # Added and removed strokes combine with the latest version.
    review.save_correction(web, turn_id, 1, add, strokes(0.5, 1.0, 0.25), rita)  # + 10 x 30
    after = review.save_correction(web, turn_id, 1, remove, strokes(0.0, 1.0, 0.25), rita)
    assert "version 2: rita, 1200 px" in after["correction_versions"]
    assert "version 3: rita, 600 px" in after["correction_versions"]  # rows 10-30, cols 0-30
    review.save_correction(web, turn_id, 1, replace, strokes(0.25, 0.75), ravi)
    stats = review.statistics(web, rita)
    overall, pair = stats["mask_agreement"]
    # Latest versions: rita rows 10-30 x cols 0-30 (600 px), ravi rows 0-20 x cols 15-45
    # (600 px); shared rows 10-20 x cols 15-30 = 150 px. Dice 300/1200, IoU 150/1050.
    assert overall == ["all reviewer pairs", 1, "0.25", "0.14"]
    assert pair[0] in ("rita & ravi", "ravi & rita") and pair[1:] == [1, "0.25", "0.14"]


def test_fill_counts_what_a_closed_stroke_outlines(web, answered):
    rita = user(web, "rita", Role.reviewer)
    turn_id = _first_turn(web, answered)
    opened = review.open_correction(web, turn_id, 1, rita)["correction_editor"]
    h, w = opened["background"].shape[:2]
    scale = h // 40  # shown pixels per original pixel (the original is 40 x 60)
    outline = np.zeros((h, w, 4), dtype=np.uint8)
    # A square outline two original pixels thick around original rows/cols 10-30.
    y0, y1, x0, x1 = (v * scale for v in (10, 30, 10, 30))
    outline[y0:y1, x0:x1] = (255, 64, 64, 255)
    outline[y0 + 2 * scale : y1 - 2 * scale, x0 + 2 * scale : x1 - 2 * scale] = 0
    drawing = {**opened, "layers": [outline]}
    replace = review.CORRECTION_MODES[2]
    plain = review.save_correction(web, turn_id, 1, replace, drawing, rita)
    assert "version 1: rita, 144 px" in plain["correction_versions"]  # 20² - 16², the ring
    filled = review.save_correction(web, turn_id, 1, replace, drawing, rita, fill=True)
    assert "version 2: rita, 400 px" in filled["correction_versions"]  # the whole 20 x 20


def test_bad_corrections_keep_the_drawing_and_say_why(web, answered, tmp_path):
    rita = user(web, "rita", Role.reviewer)
    turn_id = _first_turn(web, answered)
    opened = review.open_correction(web, turn_id, 1, rita)["correction_editor"]
    h, w = opened["background"].shape[:2]
    blank = {**opened, "layers": [np.zeros((h, w, 4), dtype=np.uint8)]}
    everything = {**opened, "layers": [np.full((h, w, 4), 255, dtype=np.uint8)]}
    add, remove = review.CORRECTION_MODES[0], review.CORRECTION_MODES[1]

    def status(*args) -> str:
        return review.save_correction(web, turn_id, *args)["correction_status"]

    assert "Nothing is painted" in status(1, add, blank, rita)
    assert "Nothing is painted" in status(1, add, None, rita)
    assert "empty" in status(1, remove, everything, rita)  # removing everything
    assert "no mask 9" in status(9, add, everything, rita)
    assert "Choose what the strokes do" in status(1, "paint", everything, rita)
    stranger = browser(web, "s" * 32)["actor"]
    assert "reviewer role" in review.open_correction(web, turn_id, 1, stranger)["correction_status"]
    assert "Pick an answer" in review.open_correction(web, None, 1, rita)["correction_status"]
    versions = review.open_correction(web, turn_id, 1, rita)["correction_versions"]
    assert "version 1" not in versions  # nothing was stored


def test_dataset_export_from_the_review_tab(web, answered):
    import zipfile

    from webapp.handlers import review_export

    rita = user(web, "rita", Role.reviewer)
    nothing = review_export.export(web, "", "", None, rita)
    assert nothing["dataset_file"] is None and "Nothing to export" in nothing["dataset_status"]
    bad = review_export.export(web, "", "", 7, rita)
    assert "whole number from 1 to 5" in bad["dataset_status"]
    # A user-typed link id comes back escaped, never as Markdown.
    odd = review_export.export(web, "*x*", "", None, rita)["dataset_status"]
    assert "No class link has the id &#x27;&#42;x&#42;&#x27;" in odd  # as typed, not Markdown
    turn_id = _first_turn(web, answered)
    rated = review.submit_rating(web, turn_id, 5, "yes", "", ["good", "good"], rita)
    assert rated["review_status"].startswith("Rating saved")  # two masks, both good
    made = review_export.export(web, "", "", None, rita)
    assert made["dataset_status"].startswith("Exported 1 answer(s)")
    with zipfile.ZipFile(made["dataset_file"]) as archive:
        assert len(json.loads(archive.read("grounding/train.json"))) == 1
    assert review_export.export(web, "", "", None, None)["dataset_file"] is None
