from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from alembic import command
from PIL import Image

from serving.migrate import alembic_config
from serving.platform import Platform, build_platform
from serving.predictors import NoopPredictor, PredictorHolder
from serving.settings import Settings


def migrate(url: str) -> None:
    command.upgrade(alembic_config(url), "head")


def png_bytes(width: int = 40, height: int = 30, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def make_platform(tmp_path) -> Iterator[Callable[..., Platform]]:
    made: list[Platform] = []

    def make(url: str, *, predictor=None, **overrides) -> Platform:
        migrate(url)
        settings = Settings(database_url=url, artefact_dir=tmp_path / "artefacts", **overrides)
        holder = PredictorHolder(lambda: predictor or NoopPredictor())
        platform = build_platform(settings, holder=holder)
        made.append(platform)
        return platform

    yield make
    for platform in made:
        platform.runner.stop()
