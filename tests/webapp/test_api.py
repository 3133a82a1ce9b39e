"""Every named endpoint through `gradio_client` against a server launched in-process."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from medplib.masks import decode_rle
from tests.webapp.conftest import live_server, write_png

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    with live_server(tmp_path_factory.mktemp("api")) as address:
        yield address


def client(address: str) -> Client:
    return Client(address, verbose=False)


def upload(c: Client, path: str) -> dict:
    return c.predict(handle_file(path), "", 2, -1, "case", api_name="/upload")


def test_page_answers_200_and_lists_the_endpoints(server):
    address = server
    with urllib.request.urlopen(address, timeout=30) as response:
        assert response.status == 200 and b"MedPLIB" in response.read()
    names = set(client(address).view_api(return_format="dict")["named_endpoints"])
    expected = {"/login", "/upload", "/ask", "/job", "/session", "/share", "/fork", "/revoke"}
    arena = {"/arena_start", "/arena_match", "/arena_vote", "/arena_leaderboard"}
    checkpoints = {"/checkpoints", "/set_checkpoints"}
    review = {"/review_queue", "/rate", "/export", "/correct_mask", "/mask_versions"}
    review |= {"/review_stats", "/export_dataset"}
    assert expected | review | arena | checkpoints == names


def test_upload_ask_and_poll(server, tmp_path):
    address = server
    alice = client(address)
    made = upload(alice, write_png(tmp_path / "scan.png", 60, 40))
    assert (made["width_px"], made["height_px"]) == (60, 40) and made["session_id"]
    box = [{"kind": "box", "xyxy_px": [10, 8, 30, 24]}]
    answer = alice.predict(
        made["session_id"], "What is in region 1?", json.dumps(box), True, api_name="/ask"
    )
    assert answer["status"] == "succeeded" and answer["turn_index"] == 0
    turn = answer["turn"]
    assert turn["question"] == "What is in <region>?" and turn["untrained"] is True
    assert turn["regions"] == [{**box[0], "label": 1}]
    echoed = decode_rle(turn["masks"][1]["rle"])
    assert [m["mirror_agreement"] for m in turn["masks"]] == [0.92, None]
    assert echoed.shape == (40, 60) and echoed[8:24, 10:30].all() and echoed.sum() == 320
    queued = alice.predict(made["session_id"], "And then?", "", False, api_name="/ask")
    assert queued["status"] in ("queued", "running", "succeeded")
    for _ in range(100):
        polled = alice.predict(queued["job_id"], api_name="/job")
        if polled["status"] == "succeeded":
            break
    assert polled["turn"]["answer"] == "answer to: And then?"
    whole = alice.predict(made["session_id"], "", api_name="/session")
    assert [t["index"] for t in whole["turns"]] == [0, 1] and not whole["read_only"]


def test_bad_input_is_refused_with_its_reason(server, tmp_path):
    address = server
    c = client(address)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(AppError, match="not an image"):
        upload(c, str(junk))
    made = upload(c, write_png(tmp_path / "scan.png", 60, 40, seed=3))
    one_box = json.dumps([{"kind": "box", "xyxy_px": [1, 1, 9, 9]}])
    with pytest.raises(AppError, match="region 4"):
        c.predict(made["session_id"], "region 4?", one_box, True, api_name="/ask")
    with pytest.raises(AppError, match="not valid JSON"):
        c.predict(made["session_id"], "q", "[{", True, api_name="/ask")
    with pytest.raises(AppError, match="JSON list of regions"):
        c.predict(made["session_id"], "q", '["box"]', True, api_name="/ask")
    with pytest.raises(AppError, match="outside"):
        bad = json.dumps([{"kind": "point", "xy_px": [500, 5]}])
        c.predict(made["session_id"], "q", bad, True, api_name="/ask")
    with pytest.raises(AppError, match="Wrong username"):
        c.predict("rita", "nope", api_name="/login")


def test_sessions_are_private_and_a_view_link_cannot_write(server, tmp_path):
    address = server
    alice, bob = client(address), client(address)
    made = upload(alice, write_png(tmp_path / "scan.png", 60, 40, seed=4))
    alice.predict(made["session_id"], "hello", "", True, api_name="/ask")
    with pytest.raises(AppError, match="does not exist"):
        bob.predict(made["session_id"], "", api_name="/session")
    link = alice.predict(made["session_id"], "view", 24, False, api_name="/share")
    assert link["url"].endswith("/?share=" + link["token"]) and link["expires_at"]
    seen = bob.predict("", link["token"], api_name="/session")
    assert seen["read_only"] and not seen["can_fork"] and seen["turns"][0]["answer"]
    # Holding a view link gives no write access to the session behind it.
    with pytest.raises(AppError, match="does not exist"):
        bob.predict(made["session_id"], "my question", "", True, api_name="/ask")
    assert len(alice.predict(made["session_id"], "", api_name="/session")["turns"]) == 1
    with pytest.raises(AppError, match="view-only"):
        bob.predict(link["token"], api_name="/fork")
    with pytest.raises(AppError, match=r"^That link does not exist\.$"):
        bob.predict(link["link_id"], api_name="/revoke")
    assert alice.predict(link["link_id"], api_name="/revoke")["revoked"] is True
    with pytest.raises(AppError, match="revoked"):
        bob.predict("", link["token"], api_name="/session")


def test_fork_link_gives_a_writable_copy(server, tmp_path):
    address = server
    alice, bob = client(address), client(address)
    made = upload(alice, write_png(tmp_path / "scan.png", 60, 40, seed=5))
    alice.predict(made["session_id"], "first", "", True, api_name="/ask")
    link = alice.predict(made["session_id"], "fork", None, False, api_name="/share")
    assert link["expires_at"] is None or link["role"] == "fork"
    copy = bob.predict(link["token"], api_name="/fork")["session_id"]
    answer = bob.predict(copy, "second", "", True, api_name="/ask")
    assert answer["status"] == "succeeded" and answer["turn_index"] == 1
    # A class link needs the instructor role.
    with pytest.raises(AppError, match="instructor"):
        alice.predict(made["session_id"], "fork", 24, True, api_name="/share")


def test_rating_needs_a_reviewer_login_then_exports(server, tmp_path):
    address = server
    asker, reviewer = client(address), client(address)
    made = upload(asker, write_png(tmp_path / "scan.png", 60, 40, seed=6))
    done = asker.predict(made["session_id"], "rate me", "", True, api_name="/ask")
    turn_id = done["turn"]["turn_id"]
    with pytest.raises(AppError, match="reviewer"):
        asker.predict(turn_id, 4, "yes", '["good"]', "", api_name="/rate")
    with pytest.raises(AppError, match="reviewer"):
        reviewer.predict(turn_id, 4, "yes", '["good"]', "", api_name="/rate")
    assert reviewer.predict("rita", "a long password", api_name="/login") == {
        "username": "rita",
        "role": "reviewer",
    }
    items = reviewer.predict(api_name="/review_queue")["items"]
    assert turn_id in [item["turn_id"] for item in items]
    with pytest.raises(AppError, match="1 mask"):
        reviewer.predict(turn_id, 4, "yes", '["good", "good"]', "", api_name="/rate")
    rated = reviewer.predict(turn_id, 4, "yes", '["partly"]', "fine", api_name="/rate")
    assert rated["turn_id"] == turn_id and rated["rating_id"]
    path = reviewer.predict("jsonl", api_name="/export")
    rows = [json.loads(line) for line in open(path).read().splitlines()]
    mine = [r for r in rows if r["turn_id"] == turn_id]
    assert mine[0]["mask_verdicts"] == ["partly"] and mine[0]["reviewer"] == "rita"
    assert np.isclose(mine[0]["text_score"], 4)


def test_a_reviewer_corrects_a_mask_reads_agreement_and_exports_a_corpus(server, tmp_path):
    import zipfile

    from medplib.masks import encode_rle

    asker, reviewer = client(server), client(server)
    made = upload(asker, write_png(tmp_path / "scan.png", 60, 40, seed=11))
    done = asker.predict(made["session_id"], "segment it", "", True, api_name="/ask")
    turn_id = done["turn"]["turn_id"]
    fixed = np.zeros((40, 60), dtype=bool)
    fixed[5:25, 10:40] = True  # 20 x 30
    rle = json.dumps(encode_rle(fixed))
    with pytest.raises(AppError, match="reviewer account"):
        reviewer.predict(turn_id, 1, rle, api_name="/correct_mask")
    reviewer.predict("rita", "a long password", api_name="/login")
    with pytest.raises(AppError, match="mask number must be at least 1"):
        reviewer.predict(turn_id, 0, rle, api_name="/correct_mask")
    wrong_size = json.dumps(encode_rle(np.ones((4, 4), dtype=bool)))
    with pytest.raises(AppError, match="the image is 40 × 60"):
        reviewer.predict(turn_id, 1, wrong_size, api_name="/correct_mask")
    saved = reviewer.predict(turn_id, 1, rle, api_name="/correct_mask")
    assert saved["version"] == 1 and saved["author"] == "rita" and saved["area_px"] == 600
    versions = reviewer.predict(turn_id, 1, api_name="/mask_versions")["versions"]
    assert [v["version"] for v in versions] == [0, 1]
    assert versions[0]["author"] == "model"
    assert np.array_equal(decode_rle(versions[1]["rle"]), fixed)
    stats = reviewer.predict(api_name="/review_stats")
    assert stats["masks"]["corrected_masks"] >= 1 and "ratings" in stats

    reviewer.predict(turn_id, 5, "yes", '["wrong"]', "", api_name="/rate")
    # The wrong verdict is set beside the model's own numbers for that mask.
    signals = reviewer.predict(api_name="/review_stats")["mask_signals"]
    assert [s["verdict"] for s in signals] == ["good", "partly", "wrong"]
    wrong = signals[2]
    assert wrong["masks_rated"] >= 1 and wrong["masks_checked"] == wrong["masks_rated"]
    assert (wrong["mean_score"], wrong["mean_mirror_agreement"]) == (0.75, 0.92)
    path, summary = reviewer.predict("", "", 0, api_name="/export_dataset")
    assert summary["corrected"] >= 1 and summary["by_task"]["grounding"] >= 1
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        records = json.loads(archive.read("grounding/train.json"))
    assert "data_card.json" in names and any(n.startswith("masks_merged/") for n in names)
    assert len(records) == summary["by_task"]["grounding"]
    with pytest.raises(AppError, match="is not a date"):
        reviewer.predict("", "yesterday", 0, api_name="/export_dataset")
    with pytest.raises(AppError, match="Nothing to export"):
        reviewer.predict("", "2999-01-01", 0, api_name="/export_dataset")


def test_login_keeps_what_the_client_did_anonymously(server, tmp_path):
    visitor = client(server)
    made = upload(visitor, write_png(tmp_path / "scan.png", 60, 40, seed=8))
    visitor.predict("rita", "a long password", api_name="/login")
    # The session made before logging in is now the account's own, still writable.
    whole = visitor.predict(made["session_id"], "", api_name="/session")
    assert whole["session_id"] == made["session_id"] and not whole["read_only"]
    # Another anonymous client still cannot read it.
    with pytest.raises(AppError, match="does not exist"):
        client(server).predict(made["session_id"], "", api_name="/session")


def test_an_app_built_after_asyncio_run_still_queues(tmp_path):
    # asyncio.run() leaves the thread without a current loop; gradio's queue locks would be None.
    async def nothing() -> None:
        return None

    asyncio.run(nothing())
    with live_server(tmp_path) as address:
        made = upload(client(address), write_png(tmp_path / "scan.png", 30, 20))
        assert (made["width_px"], made["height_px"]) == (30, 20) and made["session_id"]


def test_the_api_guide_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """webapp/API.md's Python example, verbatim but for the server's address.

    A server of its own (so the export holds this example's rating only); it already has the
    reviewer account the guide's shell step creates.
    """
    import re
    from pathlib import Path

    guide = (Path(__file__).resolve().parents[2] / "webapp" / "API.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", guide, re.DOTALL)
    assert "http://127.0.0.1:7860/" in code
    monkeypatch.chdir(tmp_path)
    write_png(tmp_path / "scan.png", 160, 120)
    with live_server(tmp_path / "guide") as server:
        exec(compile(code.replace("http://127.0.0.1:7860/", server), "API.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "succeeded answer to: What is in <region>?"
    assert any(line.startswith("read-only link: " + server + "?share=") for line in lines)
    # The export ends with the rating the example made: score 4, text correct, masks good.
    (row,) = [line for line in lines if ",rita," in line]
    assert ",4,True,good;good," in row
