from __future__ import annotations

import json
import re
import sys

import pytest

from tests.notebooks.runner import execute, has_no_outputs
from tests.webapp.conftest import free_port, migrate
from tests.webapp.serving import running_server, server_env


@pytest.mark.slow
def test_review_loop_notebook_corrects_exports_finetunes_and_the_arena_prefers_after(
    tmp_path, monkeypatch
):
    from serving.models import Role
    from serving.platform import build_platform
    from serving.services.accounts import create_user
    from serving.settings import Settings

    url = f"sqlite:///{tmp_path / 'medplib.db'}"
    migrate(url)
    build_platform(Settings(database_url=url, artefact_dir=tmp_path / "artefacts")).call(
        create_user, username="rita", password="a long password", role=Role.reviewer
    )
    work = tmp_path / "loop"
    registry = json.dumps({"before": "", "after": str(work / "after")})
    port = free_port()
    env = server_env(
        tmp_path,
        MEDPLIB_DATABASE_URL=url,
        MEDPLIB_ARTEFACT_DIR=str(tmp_path / "artefacts"),
        MEDPLIB_PREDICTOR="medplib",
        MEDPLIB_CHECKPOINTS=registry,
        OMP_NUM_THREADS="1",
    )
    base = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "medplib.cli", "serve", "--port", str(port)]
    with running_server(cmd, env, base):
        monkeypatch.setenv("MEDPLIB_API_URL", base)
        monkeypatch.setenv("MEDPLIB_REVIEW_LOOP_DIR", str(work))
        nb = execute("review_loop.ipynb")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    found = re.search(r"16 answers, (\d+) with a mask; the model's mean Dice: ([\d.]+)", text)
    assert found is not None
    masked, model_dice = int(found.group(1)), float(found.group(2))
    assert model_dice < 0.5  # the premise: the demo checkpoint outlines these badly
    assert masked >= 8  # enough corrected masks to fine-tune on
    assert "versions of the first mask: [(0, 'model'" in text and "(1, 'rita'" in text
    # Only answers with a mask were corrected; the others, rated wrong, are not exported.
    assert f"corrected masks: {masked}\n" in text and "reviewers on the card: ['rita']" in text
    assert f"{masked} valid, 0 skipped | exit status 0" in text  # `medplib data check`
    assert (work / "after" / "model.safetensors").is_file()
    votes = {k: int(v) for k, v in re.findall(r"'(before|after|tie)': (\d+)", text)}
    assert sum(votes.values()) == 12 and votes["after"] > votes["before"] + 6
    # The leaderboard lists the fine-tuned checkpoint first, its interval above the other's.
    board = re.findall(r"^\s*(before|after)\s+([\d.]+)\s+\[([\d.]+), ([\d.]+)\]", text, re.M)
    assert [row[0] for row in board] == ["after", "before"]
    assert float(board[0][2]) > float(board[1][3])


def test_review_loop_notebook_is_committed_without_outputs():
    assert has_no_outputs("review_loop.ipynb")
