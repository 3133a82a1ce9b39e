"""Real PostgreSQL, Redis and one `medplib worker --checkpoint NAME` per checkpoint: each side
of an arena match is answered by the worker of the checkpoint it is recorded as."""

from __future__ import annotations

import os
import sys

import pytest

from serving.models import JobStatus
from serving.platform import build_platform
from serving.services.arena import match_view, vote
from serving.settings import Settings
from tests.processes import start_worker, stop_worker
from tests.serving.conftest import migrate
from tests.serving.test_arena import _image, _user
from tests.worker.test_celery_integration import wait_final

pytestmark = pytest.mark.integration

CHECKPOINTS = "strong=strong,weak=weak"
PLUG_IN = "tests.serving.arena_models:stand_in"


def test_each_checkpoints_worker_answers_its_own_side(postgres_url, redis_url, tmp_path):
    migrate(postgres_url)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDPLIB_")},
        "MEDPLIB_DATABASE_URL": postgres_url,
        "MEDPLIB_BROKER_URL": redis_url,
        "MEDPLIB_PREDICTOR": PLUG_IN,
        "MEDPLIB_CHECKPOINTS": CHECKPOINTS,
        "MEDPLIB_ARTEFACT_DIR": str(tmp_path / "artefacts"),
        "PYTHONUNBUFFERED": "1",
    }
    settings = Settings(
        database_url=postgres_url,
        broker_url=redis_url,
        predictor=PLUG_IN,
        checkpoints=CHECKPOINTS,
        artefact_dir=tmp_path / "artefacts",
    )
    platform = build_platform(settings)
    procs = [
        start_worker(env, tmp_path / f"{name}.log", "--checkpoint", name, "--pool", "solo")
        for name in ("strong", "weak")
    ]
    platform.procs = procs  # type: ignore[attr-defined]  # wait_final checks they live
    try:
        player = _user(platform, "player")
        started = [
            platform.start_match(actor=player, image_id=_image(platform, 4 * i, 8), question="q")
            for i in range(4)
        ]
        jobs = [job_id for match in started for job_id in match.job_ids]
        assert set(wait_final(platform, jobs).values()) == {JobStatus.succeeded}
        for match in started:
            platform.call(vote, actor=player, match_id=match.match_id, choice="tie")
            shown = platform.call(match_view, actor=player, match_id=match.match_id)
            assert shown.answered_by == tuple(f"stand-in-{name}" for name in shown.names or ())
    finally:
        for proc in procs:
            stop_worker(proc)
        for log in sorted(tmp_path.glob("*.log")):
            sys.stdout.write(log.read_text(errors="replace")[-2000:])
