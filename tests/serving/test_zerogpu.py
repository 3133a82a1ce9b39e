"""ZeroGPU Spaces: the model call runs inside ``spaces.GPU``; elsewhere nothing changes."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import pytest

from serving import execution
from serving.execution import run_job
from serving.models import JobStatus
from serving.predictors import NoopPredictor
from serving.services.sessions import get_session
from serving.zerogpu import gpu_bound, on_zero_gpu
from tests.serving.test_jobs import _setup


class FakeSpaces:
    """Stands in for the `spaces` package at its real import path, ``spaces.GPU``."""

    def __init__(self) -> None:
        self.durations: list[int] = []
        self.inside = False

    def GPU(self, duration: int):  # noqa: N802 - the package's own name
        self.durations.append(duration)

        def decorate(fn):
            def on_gpu(*args, **kwargs):
                self.inside = True
                try:
                    return fn(*args, **kwargs)
                finally:
                    self.inside = False

            return on_gpu

        return decorate


@pytest.fixture
def fake_spaces(monkeypatch) -> FakeSpaces:
    fake = FakeSpaces()
    module = types.ModuleType("spaces")
    module.__spec__ = importlib.machinery.ModuleSpec("spaces", loader=None)
    module.GPU = fake.GPU
    monkeypatch.setitem(sys.modules, "spaces", module)
    return fake


class RecordingPredictor(NoopPredictor):
    """Notes whether each answer was computed while the GPU was held."""

    def __init__(self, fake: FakeSpaces) -> None:
        super().__init__()
        self.fake = fake
        self.calls_on_gpu: list[bool] = []

    def ask(self, question, regions=(), history=(), *, progress=None):
        self.calls_on_gpu.append(self.fake.inside)
        return super().ask(question, regions, history, progress=progress)


def test_flag_and_package_are_both_needed(fake_spaces, monkeypatch):
    assert on_zero_gpu({"SPACES_ZERO_GPU": "true"})
    assert not on_zero_gpu({})
    assert not on_zero_gpu({"SPACES_ZERO_GPU": "0"})
    monkeypatch.delitem(sys.modules, "spaces")
    monkeypatch.setattr(sys, "path", [])  # the real package is not installed either way
    assert not on_zero_gpu({"SPACES_ZERO_GPU": "true"})


def test_without_zero_gpu_the_model_call_is_not_wrapped(sqlite_url, make_platform, monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    platform = make_platform(sqlite_url)
    assert platform.ctx.predict is execution.predict
    fn = execution.predict
    assert gpu_bound(fn, duration_s=10, env={}) is fn


def test_on_zero_gpu_each_answer_is_computed_inside_spaces_gpu(
    sqlite_url, make_platform, monkeypatch, fake_spaces
):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    predictor = RecordingPredictor(fake_spaces)
    platform = make_platform(sqlite_url, predictor=predictor, job_soft_time_limit_s=120)
    actor, session_id = _setup(platform)
    for question in ("first?", "second?"):
        view = platform.ask(actor=actor, session_id=session_id, question=question, regions=[])
        assert run_job(view.id, ctx=platform.ctx) is JobStatus.succeeded
    assert predictor.calls_on_gpu == [True, True]
    # Decorated once, with the job's soft time limit as the longest the GPU may be held.
    assert fake_spaces.durations == [120]
    turns = platform.call(get_session, actor=actor, session_id=session_id).turns
    assert [t.answer for t in turns] == ["noop answer to: first?", "noop answer to: second?"]
    assert fake_spaces.inside is False  # bookkeeping around the call runs without the GPU
