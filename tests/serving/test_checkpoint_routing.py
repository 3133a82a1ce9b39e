"""Each named checkpoint has its own queue: in the Celery config, on publishing, in the
reconciler, in `medplib worker`; embedded mode loads each checkpoint's model on first use."""

from __future__ import annotations

import argparse
from datetime import timedelta

import pytest
from sqlalchemy import update

from serving.celery_app import INFERENCE_TASK, celery_config, create_celery
from serving.execution import run_job
from serving.models import Job, JobStatus, Role, utcnow
from serving.platform import build_job_context, build_platform, celery_runner
from serving.predictors import NoopPredictor, PredictorHolder
from serving.services.checkpoints import set_checkpoints
from serving.settings import Settings
from tests.serving.conftest import migrate
from tests.serving.test_arena import _image, _user
from worker.commands import _worker
from worker.tasks import consumes_inference


class Named(NoopPredictor):
    def __init__(self, name: str, loaded: list[str]) -> None:
        super().__init__()
        self.checkpoint_id = f"model-{name}"
        loaded.append(name)


@pytest.fixture
def two(sqlite_url, tmp_path):
    """Checkpoints a (the default) and b; `loaded` lists the models as they are made."""
    migrate(sqlite_url)
    settings = Settings(
        database_url=sqlite_url, artefact_dir=tmp_path / "artefacts", checkpoints="a=/a,b=/b"
    )
    loaded: list[str] = []
    holders = {n: PredictorHolder(lambda n=n: Named(n, loaded)) for n in "ab"}
    platform = build_platform(settings, holders=holders)
    platform.loaded = loaded  # type: ignore[attr-defined]
    platform.holders = holders  # type: ignore[attr-defined]
    yield platform
    platform.runner.stop()


def _queues(settings: Settings) -> list[str]:
    return [q.name for q in celery_config(settings)["task_queues"]]  # type: ignore[attr-defined]


def test_celery_config_declares_a_queue_per_checkpoint():
    plain = celery_config(Settings())
    assert _queues(Settings()) == ["gpu.medplib", "cpu"]  # as before checkpoints had names
    assert plain["task_routes"][INFERENCE_TASK] == {"queue": "gpu.medplib"}  # type: ignore[index]
    named = Settings(checkpoints="a=/a,b=/b")
    assert _queues(named) == ["gpu.a", "gpu.b", "cpu"]
    both = Settings(checkpoint="/7b", checkpoints="v2=/v2")
    assert _queues(both) == ["gpu.medplib", "gpu.v2", "cpu"]


class FakeApp:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send_task(self, name: str, *, args: list[str], queue: str, **_: object) -> None:
        assert name == INFERENCE_TASK
        self.sent.append((args[0], queue))


def test_submit_sends_each_job_to_its_checkpoints_queue(two):
    ana, root = _user(two, "ana"), _user(two, "root", Role.admin)
    app = FakeApp()
    runner = celery_runner(two.settings, app, two.factory)
    image_id = _image(two)
    first = two.ask(actor=ana, image_id=image_id, question="q", regions=[])
    two.call(set_checkpoints, actor=root, settings=two.settings, default="b")
    second = two.ask(actor=ana, image_id=image_id, question="q2", regions=[])
    legacy = two.ask(actor=ana, image_id=image_id, question="old", regions=[])
    two.call(lambda db: db.execute(update(Job).where(Job.id == legacy.id).values(checkpoint=None)))
    gone = two.ask(actor=ana, image_id=image_id, question="gone", regions=[])
    two.call(lambda db: db.execute(update(Job).where(Job.id == gone.id).values(checkpoint="zz")))
    for job in (first, second, legacy, gone):
        runner.submit(job.id)
    assert app.sent == [(first.id, "gpu.a"), (second.id, "gpu.b"), (legacy.id, "gpu.a")]
    failed = two.call(lambda db: db.get(Job, gone.id))
    assert failed.status is JobStatus.failed and "no longer offered" in failed.error


def test_a_job_waits_in_its_checkpoints_queue_and_the_reconciler_finds_it(two, redis_url):
    import redis

    from serving.reconcile import broker_task_ids, lost_jobs

    settings = two.settings.model_copy(update={"broker_url": redis_url})
    runner = celery_runner(settings, create_celery(settings), two.factory)
    ana, root = _user(two, "ana"), _user(two, "root", Role.admin)
    two.call(set_checkpoints, actor=root, settings=settings, default="b")
    job = two.ask(actor=ana, image_id=_image(two), question="q", regions=[])
    runner.submit(job.id)
    two.call(
        lambda db: db.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(queued_at=utcnow() - timedelta(hours=1), runner="celery")
        )
    )
    with redis.Redis.from_url(redis_url) as client:
        assert job.id in broker_task_ids(client, "gpu.b")
        assert job.id not in broker_task_ids(client, "gpu.a", "gpu.medplib")
        # Read across every checkpoint's queue, a job waiting in b's is not lost...
        args = {"queued_before_s": 60, "running_longer_than_s": 600}
        assert lost_jobs(two.factory, client, queues=["gpu.a", "gpu.b"], **args) == []
        # ... which reading the default queue alone would have said it was.
        assert lost_jobs(two.factory, client, queues=["gpu.a"], **args) == [job.id]


def test_embedded_mode_loads_each_checkpoint_on_first_use(two):
    ana = _user(two, "ana")
    started = two.start_match(actor=ana, image_id=_image(two), question="q")
    assert two.loaded == []  # type: ignore[attr-defined]
    run_job(started.job_ids[0], ctx=two.ctx)
    run_job(started.job_ids[1], ctx=two.ctx)
    assert sorted(two.loaded) == ["a", "b"]  # type: ignore[attr-defined]
    run_job(two.ask(actor=ana, image_id=_image(two), question="again", regions=[]).id, ctx=two.ctx)
    assert len(two.loaded) == 2  # type: ignore[attr-defined]  # loaded once each


def test_a_worker_serves_its_own_checkpoint_only(two):
    ctx = build_job_context(two.settings, serve="b", holders=two.holders)  # type: ignore[attr-defined]
    assert (ctx.checkpoint, ctx.others) == ("b", {})
    ana, root = _user(two, "ana"), _user(two, "root", Role.admin)
    for_a = two.ask(actor=ana, image_id=_image(two), question="q", regions=[])
    two.call(set_checkpoints, actor=root, settings=two.settings, default="b")
    for_b = two.ask(actor=ana, image_id=_image(two), question="q", regions=[])
    assert run_job(for_a.id, ctx=ctx) is JobStatus.failed
    assert run_job(for_b.id, ctx=ctx) is JobStatus.succeeded
    jobs = two.call(lambda db: [(j.error, j.turn.checkpoint_id) for j in (db.get(Job, for_a.id), db.get(Job, for_b.id))])  # fmt: skip
    assert "checkpoint 'a' is not served here" in (jobs[0][0] or "")
    assert jobs[1] == (None, "model-b")
    assert two.loaded == ["b"]  # type: ignore[attr-defined]


def _args(**given: object) -> argparse.Namespace:
    defaults = {"device": None, "concurrency": 1, "ping": False, "queues": None}
    return argparse.Namespace(**{**defaults, "checkpoint": None, "beat": False, **given})


@pytest.mark.parametrize(
    ("given", "line"),
    [
        ({"checkpoint": "c"}, "no checkpoint named 'c'; the settings name a, b"),
        ({"checkpoint": "a", "queues": "gpu.a,gpu.b"}, "--queues names gpu.b, another"),
        ({"queues": "cpu,gpu.b"}, "a worker serves one checkpoint (a consumes gpu.a)"),
        ({"queues": "gpu.medplib"}, "no checkpoint has the queue gpu.medplib; a consumes gpu.a"),
    ],
)
def test_medplib_worker_refuses_another_checkpoints_queue(monkeypatch, capsys, given, line):
    monkeypatch.setenv("MEDPLIB_BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("MEDPLIB_CHECKPOINTS", "a=/a,b=/b")
    assert _worker(_args(**given)) == 2
    (printed,) = capsys.readouterr().err.strip().splitlines()
    assert printed.startswith("medplib worker: error:") and line in printed


def test_only_workers_on_a_checkpoints_queue_load_a_model():
    gpu = ["gpu.a", "gpu.b"]
    assert consumes_inference("gpu.b", gpu) and consumes_inference("cpu, gpu.a", gpu)
    assert not consumes_inference("cpu", gpu) and not consumes_inference("gpu.medplib", gpu)
    assert consumes_inference("gpu.medplib")  # the default queue, as before
