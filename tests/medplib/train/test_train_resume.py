"""An interrupted run continued with --resume ends bit-for-bit where an uninterrupted one does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import stage_dict

from medplib.checkpoint import load_pretrained
from medplib.errors import UserInputError
from medplib.train import config_from_dict, run_stage
from medplib.train.logbook import read_metrics


def _config(**changes):
    # Gradient accumulation, LoRA with dropout (RNG state matters) and mid-run checkpoints.
    return config_from_dict(
        stage_dict(
            "vl",
            steps=4,
            loop={
                "steps": 4,
                "batch_size": 2,
                "grad_accum": 2,
                "checkpoint_every": 2,
                "log_every": 1,
            },
            lora={"r": 4, "alpha": 8, "dropout": 0.2, "target_modules": ["q_proj", "v_proj"]},
            **changes,
        )
    )


@pytest.fixture(scope="module")
def runs(align_dir: Path, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    cfg = _config()
    root = tmp_path_factory.mktemp("resume")
    whole = run_stage(cfg, corpus, root / "whole", init_dir=align_dir, progress=False)
    part = run_stage(cfg, corpus, root / "cut", init_dir=align_dir, progress=False, stop_after=1)
    cut_state = json.loads((root / "cut" / "trainer_state.json").read_text())
    cut_has_model = (root / "cut" / "model.safetensors").exists()
    rest = run_stage(cfg, corpus, root / "cut", init_dir=align_dir, resume=True, progress=False)
    return {
        "root": root,
        "whole": whole,
        "part": part,
        "rest": rest,
        "cut_state": cut_state,
        "cut_has_model": cut_has_model,
    }


def test_resume_matches_an_uninterrupted_run(runs: dict, align_dir: Path):
    root = runs["root"]
    whole, part, rest = runs["whole"], runs["part"], runs["rest"]
    assert not part.complete and part.step == 1
    assert runs["cut_state"]["complete"] is False and runs["cut_state"]["step"] == 1
    assert not runs["cut_has_model"]
    assert rest.complete and rest.start_step == 1 and rest.step == whole.step == 4

    # LoRA adapters were merged: the checkpoint has the plain layout and loads.
    model, _, _ = load_pretrained(root / "whole")
    assert not any("lora" in k for k in model.state_dict())
    a = load_file(root / "whole" / "model.safetensors")
    b = load_file(root / "cut" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The lora dropout and the data order really made the run depend on its state.
    before = load_file(align_dir / "model.safetensors")
    q = "language_model.model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(a[q], before[q])
    # The log is continuous: steps 1..4, each once, same losses.
    la = [
        (r["step"], r["loss"])
        for r in read_metrics(root / "whole" / "metrics.jsonl")
        if r["kind"] == "train"
    ]
    lb = [
        (r["step"], r["loss"])
        for r in read_metrics(root / "cut" / "metrics.jsonl")
        if r["kind"] == "train"
    ]
    assert la == lb and [s for s, _ in la] == [1, 2, 3, 4]


def test_resume_of_a_finished_run_does_nothing(runs: dict, align_dir: Path, corpus: Path):
    out = runs["root"] / "whole"
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    result = run_stage(_config(), corpus, out, init_dir=align_dir, resume=True, progress=False)
    assert result.complete and "nothing to do" in result.message
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp


def test_resume_with_another_config_is_refused(runs: dict, align_dir: Path, corpus: Path):
    cfg = _config(optim={"lr": 5e-3})
    with pytest.raises(UserInputError, match="config differs"):
        run_stage(
            cfg, corpus, runs["root"] / "whole", init_dir=align_dir, resume=True, progress=False
        )


def test_a_second_run_into_a_used_folder_needs_resume(runs: dict, align_dir: Path, corpus: Path):
    with pytest.raises(UserInputError, match="pass --resume"):
        run_stage(_config(), corpus, runs["root"] / "whole", init_dir=align_dir, progress=False)
