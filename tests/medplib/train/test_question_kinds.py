"""`data.question_kinds` and `data.sources` (records weighted by question kind and by source)
and a vl run continuing a vl run."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from train_helpers import stage_dict

from medplib.cli import main
from medplib.data.mecovqa import MeCoVQADataset
from medplib.errors import UserInputError
from medplib.train import config_from_dict, run_stage
from medplib.train.data import (
    RecordOrder,
    combined_multipliers,
    kind_multipliers,
    source_multipliers,
)
from medplib.train.preflight import plan_stage


def _with_kinds(kinds: list[str | None]) -> MeCoVQADataset:
    """A dataset object whose samples carry only the kinds (all kind_multipliers reads)."""
    ds = MeCoVQADataset.__new__(MeCoVQADataset)
    ds.samples = [SimpleNamespace(question_kind=k) for k in kinds]  # type: ignore[misc]
    return ds


def test_factors_repeat_drop_and_sample_records():
    factors = np.array([0, 0, 1, 1, 1, 2, 2, 0.5, 0.5, 0.5, 0.5])
    order = RecordOrder({"vqa": 11}, {"vqa": 1.0}, seed=3, multipliers={"vqa": factors})
    assert order.epoch_length == 3 + 4 + 2
    halves = []
    for e in range(4):
        seen = Counter(int(k) for _, k in order.epoch(e))
        assert not seen[0] and not seen[1]  # factor 0: never
        assert [seen[k] for k in (2, 3, 4, 5, 6)] == [1, 1, 1, 2, 2]
        half = sorted(k for k in (7, 8, 9, 10) if seen[k])
        assert len(half) == 2 and all(seen[k] == 1 for k in half)
        halves.append(tuple(half))
    assert len(set(halves)) > 1  # another half of the 0.5 group each epoch


def test_uniform_factors_give_the_order_without_factors():
    sizes, weights = {"vqa": 7, "region": 5}, {"vqa": 1.5, "region": 2.0}
    plain = RecordOrder(sizes, weights, seed=9)
    ones = RecordOrder(sizes, weights, seed=9, multipliers={"vqa": np.ones(7)})
    for e in range(3):
        np.testing.assert_array_equal(plain.epoch(e), ones.epoch(e))


def test_all_factors_zero_is_refused():
    with pytest.raises(UserInputError, match="empty after weighting"):
        RecordOrder({"vqa": 3}, {"vqa": 1.0}, seed=0, multipliers={"vqa": np.zeros(3)})


def test_kind_multipliers_use_the_star_for_other_and_unnamed_kinds():
    sets = {
        "vqa": _with_kinds(["side", "presence", None, "height"]),
        "region": _with_kinds(["verify-region"]),
    }
    assert kind_multipliers(sets, {}) is None
    got = kind_multipliers(sets, {"side": 3.0, "height": 2.0, "*": 0.0})
    assert got is not None
    assert got["vqa"].tolist() == [3.0, 0.0, 0.0, 2.0] and got["region"].tolist() == [0.0]
    got = kind_multipliers(sets, {"presence": 0.5})  # "*" defaults to 1
    assert got is not None and got["vqa"].tolist() == [1.0, 0.5, 1.0, 1.0]
    with pytest.raises(UserInputError, match=r"names 'sides'.*\['height', 'presence'"):
        kind_multipliers(sets, {"sides": 1.0})


def test_source_factors_multiply_with_kind_factors():
    sets = {"grounding": _with_kinds(["segment", "segment", "outline", None])}
    sources = ["synthetic", "isic", "isic", "busi"]
    for sample, source in zip(sets["grounding"].samples, sources, strict=True):
        sample.source = source  # type: ignore[attr-defined]
    assert source_multipliers(sets, {}) is None
    by_source = source_multipliers(sets, {"isic": 4.0, "*": 0.5})
    assert by_source is not None and by_source["grounding"].tolist() == [0.5, 4.0, 4.0, 0.5]
    by_kind = kind_multipliers(sets, {"outline": 0.0})
    both = combined_multipliers(by_kind, None, by_source)
    assert both is not None and both["grounding"].tolist() == [0.5, 4.0, 0.0, 0.5]
    assert combined_multipliers(None, None) is None
    # A source this corpus lacks (built without the real data) weighs nothing and is no error.
    assert source_multipliers(sets, {"kvasir": 2.0}) is None  # None: every record once
    mixed = source_multipliers(sets, {"kvasir": 2.0, "busi": 3.0})
    assert mixed is not None and mixed["grounding"].tolist() == [1.0, 1.0, 1.0, 3.0]
    # The order sees each isic "segment" record four times per epoch, the others half the time.
    order = RecordOrder({"grounding": 4}, {"grounding": 1.0}, seed=1, multipliers=both)
    seen = Counter(int(k) for _, k in order.epoch(0))
    assert seen[1] == 4 and seen[2] == 0


def test_fingerprint_changes_only_when_kinds_are_weighted():
    plain = config_from_dict(stage_dict("vl"))
    empty = config_from_dict(stage_dict("vl", data={"question_kinds": {}}))
    weighted = config_from_dict(stage_dict("vl", data={"question_kinds": {"side": 2.0}}))
    assert plain.fingerprint() == empty.fingerprint() != weighted.fingerprint()
    by_source = config_from_dict(stage_dict("vl", data={"sources": {"synthetic": 2.0}}))
    no_source = config_from_dict(stage_dict("vl", data={"sources": {}}))
    assert no_source.fingerprint() == plain.fingerprint() != by_source.fingerprint()


def _kinds_of(path: Path) -> list[str | None]:
    return [r.get("question_kind") for r in json.loads(path.read_text())]


def test_a_vl_run_continues_a_vl_run_on_the_weighted_kinds_only(
    corpus: Path, stages: dict[str, Path], tmp_path: Path
):
    records = _kinds_of(corpus / "vqa" / "train.json")
    assert {"side", "height"} <= set(records) and len(set(records)) > 3
    cfg = config_from_dict(
        stage_dict(
            "vl",
            steps=3,
            data={
                "tasks": {"vqa": 1.0},
                "question_kinds": {"side": 1.0, "height": 1.0, "*": 0.0},
                "max_records": None,
                "val_records": 4,
            },
        )
    )
    plan = plan_stage(cfg, corpus, tmp_path / "again", init_dir=stages["vl"])
    order = plan.order
    assert order is not None
    picked = {records[k] for _, k in order.epoch(0)}
    assert picked == {"side", "height"}
    assert order.epoch_length == sum(k in ("side", "height") for k in records)

    result = run_stage(cfg, corpus, tmp_path / "again", init_dir=stages["vl"], progress=False)
    state = json.loads((tmp_path / "again" / "trainer_state.json").read_text())
    assert result.complete and result.step == 3 and result.start_step == 0
    assert state["complete"] and state["stage"] == "vl"
    assert state["init"] == str(stages["vl"])
    # Grounding accepts the continued vl run as its start.
    gr = plan_stage(
        config_from_dict(stage_dict("grounding")),
        corpus,
        tmp_path / "gr",
        init_dir=tmp_path / "again",
    )
    assert gr.start_config is not None


def test_bad_kind_settings_exit_2_and_write_nothing(
    corpus: Path, stages: dict[str, Path], tmp_path: Path, capsys
):
    out = tmp_path / "out"
    cases = {
        "misspelt kind": ({"sid": 1.0}, "names 'sid'"),
        "every kind weighted 0": ({"*": 0.0}, "empty after weighting"),
    }
    for name, (kinds, message) in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(stage_dict("vl", data={"question_kinds": kinds})))
        argv = ["train", "--stage", "vl", "--config", str(path), "--data", str(corpus)]
        argv += ["--out", str(out), "--init", str(stages["vl"])]
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (name, err)
        assert not out.exists(), name
    # A grounding run is no start for vl: the message names both accepted starts.
    path = tmp_path / "vl.yaml"
    path.write_text(yaml.safe_dump(stage_dict("vl")))
    argv = ["train", "--stage", "vl", "--config", str(path), "--data", str(corpus)]
    assert main([*argv, "--out", str(out), "--init", str(stages["grounding"])]) == 2
    err = capsys.readouterr().err
    assert "starts from the align stage or continues a finished vl run" in err, err
    assert not out.exists()
