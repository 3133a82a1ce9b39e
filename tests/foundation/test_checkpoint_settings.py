"""MEDPLIB_CHECKPOINTS: named checkpoints, checked at start; MEDPLIB_CHECKPOINT stays "default"."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serving.settings import Settings, describe_error


def test_without_names_the_one_checkpoint_is_default_on_todays_queue():
    assert Settings().checkpoint_registry == {"default": ""}
    plain = Settings(checkpoint="/ckpt/7b")
    assert plain.checkpoint_registry == {"default": "/ckpt/7b"}
    assert (plain.default_checkpoint, plain.checkpoint_queues) == (
        "default",
        {"default": "gpu.medplib"},
    )


@pytest.mark.parametrize(
    "value",
    ['{"v1": "/ckpt/v1", "demo": ""}', "v1=/ckpt/v1, demo="],
)
def test_json_and_pairs_name_the_same_checkpoints(value):
    s = Settings(checkpoints=value)
    assert s.checkpoint_registry == {"v1": "/ckpt/v1", "demo": ""}
    # The first named is the default when none is called "default"; each has its own queue.
    assert s.default_checkpoint == "v1"
    assert s.checkpoint_queues == {"v1": "gpu.v1", "demo": "gpu.demo"}


def test_medplib_checkpoint_joins_the_names_as_default(monkeypatch):
    monkeypatch.setenv("MEDPLIB_CHECKPOINT", "/ckpt/7b")
    monkeypatch.setenv("MEDPLIB_CHECKPOINTS", "v2=/ckpt/v2")
    s = Settings()
    assert s.checkpoint_registry == {"default": "/ckpt/7b", "v2": "/ckpt/v2"}
    assert s.default_checkpoint == "default"
    assert s.checkpoint_queues == {"default": "gpu.medplib", "v2": "gpu.v2"}


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"MEDPLIB_CHECKPOINTS": "V1=/x"}, "MEDPLIB_CHECKPOINTS: 'V1' is not a checkpoint name"),
        ({"MEDPLIB_CHECKPOINTS": "v1"}, "MEDPLIB_CHECKPOINTS: 'v1' is not name=path"),
        ({"MEDPLIB_CHECKPOINTS": "a=/x,a=/y"}, "MEDPLIB_CHECKPOINTS: 'a' is named twice"),
        ({"MEDPLIB_CHECKPOINTS": "medplib=/x"}, "'medplib' is reserved"),
        ({"MEDPLIB_CHECKPOINTS": '{"a": 3}'}, "the path of 'a' must be text"),
        ({"MEDPLIB_CHECKPOINTS": '{"a": "/x"'}, "MEDPLIB_CHECKPOINTS: is not valid JSON"),
        (
            {"MEDPLIB_CHECKPOINT": "/x", "MEDPLIB_CHECKPOINTS": "default=/y"},
            "MEDPLIB_CHECKPOINT is the checkpoint named default",
        ),
    ],
)
def test_bad_names_are_refused_with_one_line(monkeypatch, env, line):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError) as err:
        Settings()
    message = describe_error(err.value)
    assert line in message and "\n" not in message
