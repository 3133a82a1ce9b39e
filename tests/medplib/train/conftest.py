"""A small synthetic corpus and a chain of briefly trained stages, shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_helpers import stage_dict

from medplib.data.build import BuildConfig, build_corpus
from medplib.train import config_from_dict, run_stage


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # Tiny models gain nothing from a second thread, and on a busy machine OpenMP threads
    # that wait for each other cost more than they bring.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train") / "corpus"
    build_corpus(BuildConfig.small(out, seed=1, realdata=None))
    return out


@pytest.fixture(scope="session")
def align_dir(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("align") / "align"
    run_stage(config_from_dict(stage_dict("align")), corpus, out, progress=False)
    return out


@pytest.fixture(scope="session")
def stages(
    corpus: Path, align_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """align → vl → grounding → moe, a few steps each; {stage: out dir}."""
    root = tmp_path_factory.mktemp("stages")
    out = {s: root / s for s in ("vl", "grounding", "moe")}
    out["align"] = align_dir
    run_stage(
        config_from_dict(stage_dict("vl")),
        corpus,
        out["vl"],
        init_dir=align_dir,
        progress=False,
    )
    run_stage(
        config_from_dict(stage_dict("grounding")),
        corpus,
        out["grounding"],
        init_dir=out["vl"],
        progress=False,
    )
    run_stage(
        config_from_dict(
            stage_dict(
                "moe",
                model={
                    "mask_threshold": 0.5,
                    "flip_tta_min_agreement": 0.7,
                    "side_tta_max_margin": 2.0,
                    "presence_check_max_margin": 0.5,
                    "presence_check_min_mask_score": 0.8,
                    "region_check_max_margin": 3.0,
                    "region_check_min_coverage": 0.6,
                },
            )
        ),
        corpus,
        out["moe"],
        experts=(out["vl"], out["grounding"]),
        export_dir=root / "export",
        progress=False,
    )
    out["export"] = root / "export"
    return out
