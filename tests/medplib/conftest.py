"""Fixtures shared by the library tests."""

from __future__ import annotations

import pytest

from medplib import checkpoint


@pytest.fixture(scope="session")
def untrained_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("medplib-cache")


@pytest.fixture()
def untrained_default(untrained_cache_dir, monkeypatch):
    """Make the default checkpoint the untrained tiny one, built once per session.

    For tests of the fallback used when the bundled demo checkpoint is missing.
    """
    monkeypatch.setenv("MEDPLIB_CACHE_DIR", str(untrained_cache_dir))
    monkeypatch.setattr(checkpoint, "ASSET_DEMO_DIR", untrained_cache_dir / "no-demo-here")
    return untrained_cache_dir


@pytest.fixture(scope="module")
def demo():
    """The shipped demo checkpoint's predictor, loaded once per module."""
    from medplib.predictor import MedPLIBPredictor

    return MedPLIBPredictor.from_pretrained()


@pytest.fixture()
def predictor(demo):
    """`demo`, with the inference settings its config shipped with restored after the test."""
    from medplib.modeling.configuration import INFERENCE_SETTINGS

    saved = {name: getattr(demo.config, name) for name in INFERENCE_SETTINGS}
    yield demo
    for name, value in saved.items():
        setattr(demo.config, name, value)
