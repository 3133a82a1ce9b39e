"""`medplib train`: bad input → one sentence, exit status 2, nothing written; a good run works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from train_helpers import stage_dict

from medplib.checkpoint import load_pretrained
from medplib.cli import main

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def _tree(*roots: Path) -> dict[str, int]:
    return {
        str(p): p.stat().st_mtime_ns for root in roots if root.exists() for p in root.rglob("*")
    }


def _yaml(tmp_path: Path, stage: str, **changes) -> Path:
    path = tmp_path / f"{stage}.yaml"
    path.write_text(yaml.safe_dump(stage_dict(stage, **changes)))
    return path


@pytest.fixture()
def vqa_only(corpus: Path, tmp_path: Path) -> Path:
    """A corpus folder with images and VQA records but no region or grounding files."""
    root = tmp_path / "vqa_only"
    (root / "vqa").mkdir(parents=True)
    (root / "images").symlink_to(corpus / "images")
    (root / "vqa" / "train.json").write_text((corpus / "vqa" / "train.json").read_text())
    return root


@pytest.fixture()
def unfinished(tmp_path: Path) -> Path:
    run = tmp_path / "unfinished_vl"
    run.mkdir()
    (run / "trainer_state.json").write_text(json.dumps({"stage": "vl", "complete": False}))
    return run


def test_bad_input_exits_2_and_writes_nothing(
    corpus: Path, align_dir: Path, vqa_only: Path, unfinished: Path, tmp_path: Path, capsys
):
    out = tmp_path / "out"
    vl_yaml, gr_yaml, moe_yaml = (_yaml(tmp_path, s) for s in ("vl", "grounding", "moe"))
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text(
        yaml.safe_dump({**stage_dict("vl"), "optim": {"lr": 1e-3, "sheduler": "x"}})
    )
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    d, a = str(corpus), str(align_dir)
    cases = {
        "no prerequisite": (["--stage", "vl", "--config", vl_yaml, "--out", out], "needs --init"),
        "missing init": (
            ["--stage", "vl", "--config", vl_yaml, "--out", out, "--init", tmp_path / "nope"],
            "does not exist",
        ),
        "wrong prerequisite": (
            ["--stage", "grounding", "--config", gr_yaml, "--out", out, "--init", a],
            "output of the align stage",
        ),
        "unfinished prerequisite": (
            ["--stage", "grounding", "--config", gr_yaml, "--out", out, "--init", unfinished],
            "unfinished vl run",
        ),
        "moe without experts": (
            ["--stage", "moe", "--config", moe_yaml, "--out", out],
            "--experts",
        ),
        "data without region records": (
            ["--stage", "vl", "--config", vl_yaml, "--out", out, "--init", a, "--data", vqa_only],
            "lacks region/train.json",
        ),
        "unknown config key": (
            ["--stage", "vl", "--config", bad_yaml, "--out", out, "--init", a],
            "unknown key optim.sheduler",
        ),
        "stage / config mismatch": (
            ["--stage", "grounding", "--config", vl_yaml, "--out", out, "--init", a],
            "is a vl config",
        ),
        "foreign output folder": (
            ["--stage", "vl", "--config", vl_yaml, "--out", used, "--init", a],
            "not empty",
        ),
    }
    before = _tree(corpus, align_dir, vqa_only, unfinished, used)
    for name, (args, message) in cases.items():
        argv = ["train", *map(str, args)]
        if "--data" not in argv:
            argv += ["--data", d]
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert message in err, (name, err)
        assert err.count("\n") == 1 and "Traceback" not in err, (name, err)
        assert not out.exists(), name
    assert _tree(corpus, align_dir, vqa_only, unfinished, used) == before


def test_7b_align_is_skipped_with_a_message(corpus: Path, tmp_path: Path, capsys):
    out = tmp_path / "out7b"
    code = main(
        ["train", "--stage", "align", "--config", str(CONFIGS / "7b" / "align.yaml"),
         "--data", str(corpus), "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    assert "align is skipped for the medplib-7b preset" in capsys.readouterr().out
    assert not out.exists()


def test_a_cli_run_writes_a_loadable_checkpoint(corpus: Path, tmp_path: Path, capsys):
    out = tmp_path / "align"
    cfg = _yaml(tmp_path, "align", steps=2, loop={"steps": 2, "batch_size": 2, "log_every": 1})
    argv = ["train", "--stage", "align", "--config", str(cfg), "--data", str(corpus)]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    assert "align: 2 steps" in capsys.readouterr().out
    model, tokenizer, config = load_pretrained(out)
    assert config.trained and len(tokenizer) == model.language_model.config.vocab_size
    assert (out / "metrics.jsonl").is_file() and (out / "loss_curves.png").is_file()
    # Running the same command again without --resume is refused; with it there is nothing to do.
    assert main([*argv, "--out", str(out)]) == 2
    assert main([*argv, "--out", str(out), "--resume"]) == 0
    assert "nothing to do" in capsys.readouterr().out
