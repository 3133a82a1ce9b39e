"""benchmarks/ablation.py --quick runs every variant end to end and writes its table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from script_helpers import load_benchmark


def _load():
    return load_benchmark("ablation")


def test_first_structure_prefers_the_earliest_longest_name():
    ablation = _load()
    names = ["lung", "left lung", "liver", "heart"]
    assert (
        ablation.first_structure("This area shows the left lung, near the heart.", names)
        == "left lung"
    )
    assert ablation.first_structure("The heart.", names) == "heart"
    assert ablation.first_structure("No idea.", names) is None


def test_moe_variant_splits_the_budget_as_the_shipped_recipe_does():
    ablation = _load()
    split = ablation.recipe_split()
    steps = {s: ablation.base_config(s)["loop"]["steps"] for s in ("vl", "grounding", "moe")}
    assert split["vl"] == pytest.approx(steps["vl"] / sum(steps.values()))
    assert sum(split.values()) == pytest.approx(1.0)
    assert ablation.stage_steps({"vl": 0.375, "grounding": 0.390625, "moe": 0.234375}, 2000) == {
        "vl": 750,
        "grounding": 781,
        "moe": 469,
    }
    # Whole steps, at least one per stage, never more or fewer than the budget.
    for budget in (3, 7, 8, 999):
        got = ablation.stage_steps({"vl": 0.2, "grounding": 0.5, "moe": 0.3}, budget)
        assert sum(got.values()) == budget and min(got.values()) >= 1
    assert ablation.stage_steps({"vl": 0.2, "grounding": 0.5, "moe": 0.3}, 10) == {
        "vl": 2,
        "grounding": 5,
        "moe": 3,
    }


def test_a_moe_split_that_is_not_three_fractions_of_one_is_refused(tmp_path: Path, capsys):
    ablation = _load()
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        ablation.main(["--out", str(out), "--moe-split", "0.5", "0.5", "0.5"])
    assert exit_info.value.code == 2
    assert "sum to 1" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_quick_ablation_runs_all_variants(tmp_path: Path, capsys):
    ablation = _load()
    assert ablation.main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "ablation.json").read_text())
    rows = result["variants"]
    assert list(rows) == ["joint", "vl", "grounding", "moe"]
    assert result["budget_steps"] == 8
    # Same budget: every variant trained 8 optimizer steps after the shared align stage.
    for name, stages in {
        "joint": ["vl"],
        "vl": ["vl"],
        "grounding": ["vl"],
        "moe": ["vl", "grounding", "moe"],
    }.items():
        steps = [
            json.loads((tmp_path / "runs" / name / s / "trainer_state.json").read_text())["step"]
            for s in stages
        ]
        assert sum(steps) == 8, (name, steps)
    for row in rows.values():
        assert row["n_synthetic"] == 3 and 0.0 <= row["mdice_synthetic"] <= 1.0
        assert 0.0 <= row["closed_acc"] <= 1.0 and 0.0 <= row["region_acc"] <= 1.0
    # Top-1 routing: the 2-expert model costs about what the dense one does per token.
    dense, moe = rows["joint"]["mflops_per_token"], rows["moe"]["mflops_per_token"]
    assert dense > 0 and abs(moe - dense) / dense < 0.05
    table = (tmp_path / "ablation.md").read_text()
    assert sum(line.startswith("| ") for line in table.splitlines()) == 5 and "| moe |" in table
    # One variant again: its run and its evaluation are reused, the table lists it alone.
    # The experts before the moe stage can be rows too (--intermediate).
    cached = tmp_path / "runs" / "moe" / "moe" / "ablation-eval.json"
    before = cached.stat().st_mtime_ns
    argv_moe = ["--quick", "--out", str(tmp_path), "--variants", "moe", "--intermediate"]
    assert ablation.main(argv_moe) == 0
    assert cached.stat().st_mtime_ns == before
    again_rows = json.loads((tmp_path / "ablation.json").read_text())["variants"]
    assert list(again_rows) == ["moe", "moe: vl expert", "moe: grounding expert"]
    assert again_rows["moe"] == rows["moe"]
    assert again_rows["moe: vl expert"]["n_synthetic"] == 3
    # A finished align run can be shared instead of trained again; anything else is refused.
    again = tmp_path / "again"
    shared = str(tmp_path / "runs" / "shared" / "align")
    argv = ["--quick", "--out", str(again), "--data", str(tmp_path / "corpus")]
    assert ablation.main([*argv, "--align", shared, "--budget-steps", "4"]) == 0
    assert not (again / "runs" / "shared").exists()
    assert json.loads((again / "ablation.json").read_text())["budget_steps"] == 4
    with pytest.raises(SystemExit):
        ablation.main([*argv, "--align", str(tmp_path / "runs" / "vl" / "vl")])
