"""Evaluating a checkpoint on every split and task of a built corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_helpers import grounding, rect, vqa, write_image, write_json, write_png

from medplib.eval.corpus import (
    capped_records,
    closed_accuracy_intervals,
    closed_kind_rows,
    evaluate_corpus,
    evenly_spaced,
    kinds_markdown,
    main,
    markdown,
    region_accuracy_by_source,
    region_correct,
    summarise_reports,
    summary_rows,
)

HW = (48, 64)


def test_capped_records_spreads_n_picks_over_each_source_in_file_order():
    records = [{"id": i, "source": s} for i, s in enumerate("aabacbbc")] + [{"id": 8}]
    # a at 0 1 3 → 0 1; b at 2 5 6 → 2 5; c at 4 7 → both; no source → "unknown", kept.
    kept = capped_records(records, 2)
    assert [r["id"] for r in kept] == [0, 1, 2, 4, 5, 7, 8]
    assert capped_records(records, None) == records
    # A file sorted by modality: 3 picks out of 30 take one from each block of 10.
    sorted_by_modality = [
        {"id": i, "source": "s", "modality": "ct mr pet".split()[i // 10]} for i in range(30)
    ]
    assert [r["modality"] for r in capped_records(sorted_by_modality, 3)] == ["ct", "mr", "pet"]
    assert [r["id"] for r in capped_records(sorted_by_modality, 3)] == [0, 10, 20]


def test_evenly_spaced_picks_span_the_sequence():
    assert evenly_spaced(list(range(10)), 4) == [0, 2, 5, 7]
    assert evenly_spaced("abc", 5) == ["a", "b", "c"]
    assert evenly_spaced([1, 2], 0) == []


def test_region_answers_are_judged_by_answer_or_by_the_structure_named_first():
    names = ["lung", "left lung", "heart", "spine"]
    rows = [
        {"task": "region", "source": "s", "closed": True, "closed_correct": 1.0},
        {"task": "region", "source": "s", "closed": True, "closed_correct": 0.0},
        {  # open: the left lung first, as the reference says; more words do not matter
            "task": "region",
            "source": "s",
            "closed": False,
            "reference": "This area shows the left lung, near the heart.",
            "answer": "The left lung, beside the heart and the spine.",
        },
        {  # open: names the heart first where the reference names the left lung
            "task": "region",
            "source": "t",
            "closed": False,
            "reference": "This area shows the left lung.",
            "answer": "This area shows the heart, next to the left lung.",
        },
        {"task": "vqa", "source": "s", "closed": True, "closed_correct": 1.0},
    ]
    assert region_correct(rows[2], names) and not region_correct(rows[3], names)
    by_source = region_accuracy_by_source(rows, names)
    assert by_source == {
        # No image named: the three are one draw, so the interval cannot move.
        "s": {"count": 3, "accuracy": pytest.approx(2 / 3), "ci95": pytest.approx([2 / 3] * 2)},
        "t": {"count": 1, "accuracy": 0.0, "ci95": [0.0, 0.0]},
    }


def test_region_intervals_draw_the_questions_of_one_image_together():
    def closed(image, right):
        return {
            "task": "region",
            "source": "s",
            "image": image,
            "closed": True,
            "closed_correct": float(right),
        }

    # Image p: 3 right of 3; image q: 0 of 1. Drawn as images, a resample holds pp, pq or qq:
    # 1, 3/4 or 0. Drawn as questions, 4 of 4 wrong would be (1/4)^4, far under 2.5 %.
    rows = [closed("p", 1), closed("p", 1), closed("p", 1), closed("q", 0)]
    block = region_accuracy_by_source(rows, [])["s"]
    assert block["accuracy"] == 0.75 and block["ci95"] == [0.0, 1.0]


def test_summary_has_one_row_per_split_and_source_synthetic_first():
    reports = {
        ("holdout", "grounding"): {
            "grounding": {
                "per_source": {
                    "busi": {"count": 3, "mDice": 0.4},
                    "synthetic": {"count": 9, "mDice": 0.9},
                },
                "by_threshold": {"0.5": {"per_source": {"synthetic": {"mDice": 0.85}}}},
            }
        },
        ("holdout", "vqa"): {
            "text": {
                "per_source": {
                    "synthetic": {
                        "count": 5,
                        "closed_count": 4,
                        "closed_accuracy": 0.75,
                        "token_f1": 0.8,
                    }
                }
            }
        },
        ("val", "region"): {
            "region_accuracy": {"per_source": {"synthetic": {"count": 2, "accuracy": 1.0}}}
        },
    }
    rows = summary_rows(reports)
    assert [(r["split"], r["source"]) for r in rows] == [
        ("val", "synthetic"),
        ("holdout", "synthetic"),
        ("holdout", "busi"),
    ]
    holdout = rows[1]
    assert holdout["mDice"] == 0.9 and holdout["mDice_0.5"] == 0.85
    assert holdout["closed_accuracy"] == 0.75 and holdout["closed_n"] == 4
    assert rows[2]["mDice_0.5"] is None and rows[0]["region_accuracy"] == 1.0
    table = markdown(rows, per_source=None)
    assert "| holdout | synthetic | 9 | 0.900 | 0.850 | – | 4 | 0.750 | – | – | – | – |" in table


def test_the_strict_mdice_interval_resamples_images_per_source():
    def sample(source, image, dice):
        return {"task": "grounding", "source": source, "image": image, "dice@0.5": dice}

    samples = [
        sample("a", "one.png", 1.0),
        sample("a", "one.png", 1.0),  # one image, two questions: drawn together
        sample("a", "two.png", 0.0),
        sample("b", "only.png", 0.7),
        {"task": "vqa", "source": "a", "image": "one.png"},
    ]
    report = {
        "grounding": {
            "threshold": "0.1",
            "per_source": {"a": {"count": 3, "mDice": 0.6}, "b": {"count": 1, "mDice": 0.7}},
            "by_threshold": {"0.5": {"per_source": {"a": {"mDice": 2 / 3}, "b": {"mDice": 0.7}}}},
        },
        "samples": samples,
    }
    rows = {r["source"]: r for r in summary_rows({("holdout", "grounding"): report})}
    # Two images drawn with replacement: means 1, 2/3 or 0, with the extremes a quarter each.
    assert rows["a"]["mDice_0.5_ci95"] == [0.0, 1.0]
    assert rows["b"]["mDice_0.5_ci95"] == [0.7, 0.7]
    table = markdown(list(rows.values()), per_source=None)
    assert "| holdout | a | 3 | 0.600 | 0.667 | 0.00–1.00 | – | – | – | – | – | – |" in table


def test_closed_accuracy_gets_an_interval_per_source_that_resamples_images():
    def asked(source, image, right=None):
        closed = right is not None
        return {
            "task": "vqa",
            "source": source,
            "image": image,
            "closed": closed,
            "closed_correct": float(right) if closed else None,
        }

    samples = [
        asked("a", "p.png", 1),
        asked("a", "p.png", 1),
        asked("a", "q.png", 0),
        asked("a", "q.png"),  # open: not a closed question, not counted
        asked("b", "r.png", 1),
    ]
    assert closed_accuracy_intervals(samples) == {"a": [0.0, 1.0], "b": [1.0, 1.0]}
    report = {
        "text": {
            "per_source": {
                "a": {"count": 4, "closed_count": 3, "closed_accuracy": 2 / 3},
                "b": {"count": 1, "closed_count": 1, "closed_accuracy": 1.0},
            }
        },
        "samples": samples,
    }
    rows = {r["source"]: r for r in summary_rows({("val", "vqa"): report})}
    assert rows["a"]["closed_accuracy_ci95"] == [0.0, 1.0]
    assert "| val | b | – | – | – | – | 1 | 1.000 | 1.00–1.00 | – | – | – |" in markdown(
        list(rows.values()), per_source=None
    )


def test_two_or_more_real_sources_get_a_mean_row_last_with_its_interval():
    def sample(source, image, dice):
        return {"task": "grounding", "source": source, "image": image, "dice@0.5": dice}

    report = {
        "grounding": {
            "threshold": "0.1",
            "per_source": {
                "a": {"count": 2, "mDice": 0.4},
                "b": {"count": 1, "mDice": 0.5},
                "synthetic": {"count": 1, "mDice": 0.9},
            },
            "by_threshold": {
                "0.5": {"per_source": {"a": {"mDice": 0.5}, "b": {"mDice": 0.5}}},
            },
        },
        "samples": [
            sample("a", "p.png", 0.0),
            sample("a", "q.png", 1.0),
            sample("b", "r.png", 0.5),
            sample("synthetic", "s.png", 0.9),
        ],
    }
    rows = summary_rows({("holdout", "grounding"): report})
    assert [r["source"] for r in rows] == ["synthetic", "a", "b", "mean of real sources"]
    mean = rows[-1]
    assert mean["grounding_n"] == 3
    assert mean["mDice"] == pytest.approx(0.45) and mean["mDice_0.5"] == pytest.approx(0.5)
    # a's draws average 0, 0.5 or 1 and b is always 0.5: the mean of the two, 0.25 to 0.75.
    assert mean["mDice_0.5_ci95"] == pytest.approx([0.25, 0.75])
    assert "| holdout | mean of real sources | 3 | 0.450 | 0.500 | 0.25–0.75 | – |" in markdown(
        rows, per_source=None
    )


def test_closed_accuracy_per_question_kind_skips_open_kinds():
    block = lambda n, acc: {"count": n, "closed_count": n, "closed_accuracy": acc}  # noqa: E731
    reports = {
        ("val", "region"): {
            "text": {
                "per_question_kind": {
                    "verify-region": block(4, 0.5),
                    "name-region": {"count": 9, "closed_count": 0, "closed_accuracy": None},
                }
            }
        },
        ("holdout", "vqa"): {"text": {"per_question_kind": {"side": block(2, 1.0)}}},
        ("val", "vqa"): {"text": {"per_question_kind": {"side": block(3, 2 / 3)}}},
        ("val", "grounding"): {"grounding": {}},
    }
    rows = closed_kind_rows(reports)
    assert [(r["split"], r["task"], r["question_kind"], r["closed_n"]) for r in rows] == [
        ("val", "region", "verify-region", 4),
        ("val", "vqa", "side", 3),
        ("holdout", "vqa", "side", 2),
    ]
    assert "| val | vqa | side | 3 | 0.667 |" in kinds_markdown(rows)
    assert closed_kind_rows({("val", "vqa"): {"text": {"per_question_kind": {}}}}) == []


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    image = write_image(root, "ct_00--toy--case1--2d", HW)
    liver = write_png(root, "masks/liver.png", rect(HW, (5, 25, 10, 40)))
    for task in ("grounding", "vqa", "region"):
        (root / task).mkdir()
    write_json(root / "classes.json", {"0001": "liver", "0002": "spleen"})
    write_json(
        root / "region" / "holdout.json",
        [
            vqa(
                "r1",
                image,
                "What does the region <region> look like?",
                "This area shows the liver.",
                region=liver,
                answer_type="open",
                source="synthetic",
            )
        ],
    )
    write_json(
        root / "grounding" / "holdout.json",
        [
            grounding("g1", image, liver, source="synthetic", modality="ct"),
            grounding("g2", image, liver, source="synthetic", modality="ct"),
            grounding("g3", image, liver, source="busi-mini", modality="ct"),
        ],
    )
    write_json(
        root / "vqa" / "holdout.json",
        [
            vqa(
                "q1",
                image,
                "Is this a CT scan?",
                "Yes",
                answer_type="closed",
                source="synthetic",
                question_kind="modality",
            )
        ],
    )
    return root


def test_every_file_of_the_corpus_gets_a_report_and_the_summary_its_rows(
    corpus, tmp_path, untrained_default
):
    from medplib.predictor import MedPLIBPredictor

    predictor = MedPLIBPredictor.from_pretrained(None)
    out = tmp_path / "eval"
    summary = evaluate_corpus(predictor, corpus, out, per_source=1, max_new_tokens=4)
    assert sorted(p.name for p in out.glob("*.json")) == [
        "holdout-grounding.json",
        "holdout-region.json",
        "holdout-vqa.json",
        "summary.json",
    ]
    grounding_report = json.loads((out / "holdout-grounding.json").read_text())
    assert grounding_report["counts"]["scored"] == 2  # one per source
    rows = {r["source"]: r for r in summary["rows"]}
    assert rows["synthetic"]["grounding_n"] == 1 and rows["busi-mini"]["grounding_n"] == 1
    assert rows["synthetic"]["closed_n"] == 1 and rows["synthetic"]["region_n"] == 1
    region = json.loads((out / "holdout-region.json").read_text())["region_accuracy"]
    assert region["per_source"]["synthetic"]["count"] == 1 and "first structure" in region["rule"]
    assert "At most 1 records per source" in (out / "summary.md").read_text()
    (kind,) = summary["closed_by_question_kind"]
    assert (kind["split"], kind["task"], kind["question_kind"], kind["closed_n"]) == (
        "holdout",
        "vqa",
        "modality",
        1,
    )
    assert kind["closed_accuracy"] == rows["synthetic"]["closed_accuracy"]
    assert "| holdout | vqa | modality | 1 |" in (out / "summary.md").read_text()


def test_the_summary_is_rebuilt_from_the_reports_alone(corpus, tmp_path, untrained_default, capsys):
    from medplib.predictor import MedPLIBPredictor

    out = tmp_path / "eval"
    predictor = MedPLIBPredictor.from_pretrained(None)
    made = evaluate_corpus(predictor, corpus, out, per_source=1, max_new_tokens=4)
    first_md = (out / "summary.md").read_text()
    (out / "summary.json").unlink()
    (out / "summary.md").unlink()
    assert main(["--corpus", str(corpus), "--out", str(out), "--from-reports"]) == 0
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(made))
    assert (out / "summary.md").read_text() == first_md
    assert "| holdout | synthetic |" in capsys.readouterr().out
    # Reports of two different runs do not make one summary.
    vqa_path = out / "holdout-vqa.json"
    report = json.loads(vqa_path.read_text())
    report["inputs"]["per_source"] = 5
    vqa_path.write_text(json.dumps(report))
    assert main(["--corpus", str(corpus), "--out", str(out), "--from-reports"]) == 2
    assert "different per_source" in capsys.readouterr().err


def test_rebuilding_a_summary_needs_reports(tmp_path, capsys):
    (tmp_path / "o").mkdir()
    assert main(["--corpus", str(tmp_path), "--out", str(tmp_path / "o"), "--from-reports"]) == 2
    assert "holds no SPLIT-TASK.json report" in capsys.readouterr().err
    (tmp_path / "o" / "val-vqa.json").write_text("[1, 2]")
    with pytest.raises(Exception, match="not a `medplib eval` report"):
        summarise_reports(tmp_path / "o", tmp_path)


def test_a_directory_without_corpus_files_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["--corpus", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "holds no TASK/SPLIT.json" in capsys.readouterr().err
