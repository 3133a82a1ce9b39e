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
