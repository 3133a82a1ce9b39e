"""Fixtures: an SA-Med2D-20M-layout tree made at test time from the shared sam-med2d-demo files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from data_helpers import DEMO, OFFICIAL_STEMS, class_ids, demo_rows, needs_realdata


@pytest.fixture(scope="session")
def samed2d_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """images/ and masks/ in the official naming, plus the class mapping; read-only in tests."""
    needs_realdata()
    root = tmp_path_factory.mktemp("samed2d")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    ids = class_ids()
    for demo_stem, stem in OFFICIAL_STEMS.items():
        shutil.copyfile(DEMO / "images" / f"{demo_stem}.png", root / "images" / f"{stem}.png")
    for row in demo_rows():
        demo_stem = Path(row["image"]).stem
        name = f"{OFFICIAL_STEMS[demo_stem]}--{ids[row['target']]:04d}_{row['instance']}.png"
        shutil.copyfile(DEMO / row["mask"], root / "masks" / name)
    mapping = {f"{i:04d}": t for t, i in ids.items()}
    (root / "SAMed2D_v1_class_mapping_id.json").write_text(json.dumps(mapping))
    return root
