"""benchmarks/ablation.py --quick runs every variant end to end and writes its table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "ablation.py"


def _load():
    spec = importlib.util.spec_from_file_location("ablation", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_first_structure_prefers_the_earliest_longest_name():
    ablation = _load()
    names = ["lung", "left lung", "liver", "heart"]
    assert (
        ablation.first_structure("This area shows the left lung, near the heart.", names)
        == "left lung"
    )
    assert ablation.first_structure("The heart.", names) == "heart"
    assert ablation.first_structure("No idea.", names) is None


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
    # A finished align run can be shared instead of trained again; anything else is refused.
    again = tmp_path / "again"
    shared = str(tmp_path / "runs" / "shared" / "align")
    argv = ["--quick", "--out", str(again), "--data", str(tmp_path / "corpus")]
    assert ablation.main([*argv, "--align", shared, "--budget-steps", "4"]) == 0
    assert not (again / "runs" / "shared").exists()
    assert json.loads((again / "ablation.json").read_text())["budget_steps"] == 4
    with pytest.raises(SystemExit):
        ablation.main([*argv, "--align", str(tmp_path / "runs" / "vl" / "vl")])
