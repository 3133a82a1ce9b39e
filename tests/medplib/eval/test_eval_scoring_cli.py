"""`medplib eval --predictions` against hand-computed Dice / IoU, and its handling of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from eval_helpers import grounding, rect, vqa, write_image, write_json, write_jsonl, write_png

from medplib.cli import main
from medplib.masks import encode_rle

A, B, C = (6, 10), (8, 5), (4, 7)  # (H, W): two landscape, one portrait image


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO RLE with a list of run lengths, written independently of medplib.masks."""
    flat = mask.ravel(order="F").tolist()
    runs, current, length = [], False, 0
    for value in flat:
        if value == current:
            length += 1
        else:
            runs.append(length)
            current, length = value, 1
    runs.append(length)
    return {"size": list(mask.shape), "counts": runs}


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    """Six grounding records on three images, covering every empty-mask case and a union."""
    root = tmp_path / "corpus"
    ia = write_image(root, "ct_00--srcA--case1--2d", A)
    ib = write_image(root, "ct_00--srcB--case2--2d", B, seed=1)
    ic = write_image(root, "mr_00--srcA--case3--2d", C, seed=2)
    t1 = write_png(root, "masks/t1.png", rect(A, (1, 4, 2, 7)))  # 15 px
    t2 = write_png(root, "masks/t2.png", rect(B))  # empty
    t3 = write_png(root, "masks/t3.png", rect(B, (0, 2, 0, 5)))  # 10 px
    t4 = write_png(root, "masks/t4.png", rect(C))  # empty
    t5 = write_png(root, "masks/t5.png", rect(C, (0, 2, 0, 3)))  # 6 px
    t6 = write_png(root, "masks/t6.png", rect(C, (2, 4, 0, 3)))  # 6 px
    records = [
        grounding("g1", ia, t1),
        grounding("g2", ib, t2),
        grounding("g3", ib, t3),
        grounding("g4", ic, t4),
        grounding("g5", ic, t5),
        grounding("g6", ic, t6, source="Custom"),
    ]
    write_json(tmp_path / "data.json", records)
    g4_pred = rect(C, (1, 3, 1, 3), (0, 1, 6, 7))  # 5 px
    predictions = [
        {"id": "g6", "answer": "", "masks": [t6]},  # PNG path: the target itself
        {
            "id": "g1",
            "answer": "Here is the liver.",
            "masks": [
                encode_rle(rect(A, (1, 4, 2, 5))),  # 9 px, all inside the target
                write_png(root, "preds/g1b.png", rect(A, (2, 5, 4, 8))),  # 12 px
            ],
        },
        {"id": "g2", "answer": "", "masks": [encode_rle(rect(B))]},  # <SEG> with an empty mask
        {"id": "g3", "answer": "", "masks": [write_png(root, "preds/empty.png", rect(B))]},
        {"id": "g4", "answer": "", "masks": [_uncompressed_rle(g4_pred)]},
        {"id": "g5", "answer": "no mask", "masks": []},  # no <SEG>
    ]
    write_jsonl(tmp_path / "pred.jsonl", predictions)
    return tmp_path


def _eval(tmp_path: Path, data: str, pred: str, *extra: str) -> tuple[int, dict | None]:
    out = tmp_path / "out" / "report.json"
    code = main(
        [
            "eval",
            "--predictions",
            str(tmp_path / pred),
            "--data",
            str(tmp_path / data),
            "--images",
            str(tmp_path / "corpus"),
            "--out",
            str(out),
            *extra,
        ]
    )
    return code, (json.loads(out.read_text()) if out.exists() else None)


def test_dice_and_iou_match_hand_computation(corpus: Path, capsys):
    code, report = _eval(corpus, "data.json", "pred.jsonl")
    assert code == 0, capsys.readouterr().err
    assert report is not None and report["problems"] == []
    samples = {s["id"]: s for s in report["samples"]}
    # g1: union of 9 + 12 px overlapping in 2 px = 19 px; 13 px inside the 15-px target.
    expected = {
        "g1": (2 * 13 / (19 + 15), 13 / (19 + 15 - 13)),
        "g2": (1.0, 1.0),  # both empty
        "g3": (0.0, 0.0),  # prediction empty, target not
        "g4": (0.0, 0.0),  # target empty, prediction not
        "g5": (0.0, 0.0),  # no <SEG>
        "g6": (1.0, 1.0),  # perfect, given as a PNG path
    }
    for rid, (d, i) in expected.items():
        assert samples[rid]["dice"] == pytest.approx(d, abs=1e-6), rid
        assert samples[rid]["iou"] == pytest.approx(i, abs=1e-6), rid
    assert samples["g1"]["num_masks"] == 2 and samples["g1"]["pred_area"] == 19
    assert [rid for rid, s in samples.items() if s["no_seg"]] == ["g5"]

    g = report["grounding"]
    d1, i1 = expected["g1"]
    assert g["count"] == 6
    assert g["mDice"] == pytest.approx((d1 + 2) / 6, abs=1e-6)
    assert g["mIoU"] == pytest.approx((i1 + 2) / 6, abs=1e-6)
    assert g["median_dice"] == pytest.approx(d1 / 2, abs=1e-6)  # sorted 0,0,0,d1,1,1
    assert g["cDice"] == pytest.approx(2 * 19 / 67, abs=1e-6)  # sum I = 19, sum |P|+|T| = 67
    assert g["cIoU"] == pytest.approx(19 / 48, abs=1e-6)  # sum U = 21+0+10+5+6+6
    assert g["gIoU"] == pytest.approx((i1 + 2) / 6, abs=1e-6)
    ct, mr = (d1 + 1 + 0) / 3, (0 + 0 + 1) / 3
    assert g["per_modality"]["ct"]["mDice"] == pytest.approx(ct, abs=1e-6)
    assert g["per_modality"]["mr"]["mDice"] == pytest.approx(mr, abs=1e-6)
    assert g["macro_mDice"] == pytest.approx((ct + mr) / 2, abs=1e-6)
    assert {k: v["count"] for k, v in g["per_source"].items()} == {
        "Custom": 1,
        "srcA": 3,
        "srcB": 2,
    }
    assert g["per_source"]["srcA"]["mDice"] == pytest.approx(d1 / 3, abs=1e-6)
    assert g["no_seg_count"] == 1 and g["no_seg_rate"] == pytest.approx(1 / 6)
    assert g["per_modality"]["mr"]["no_seg_count"] == 1
    assert g["empty_target_count"] == 2 and g["multi_mask_count"] == 1
    assert any("both" in rule and "= 1" in rule for rule in g["rules"])
    assert report["thresholds"]["primary"] is None  # saved masks, threshold not stated

    # Other targets of the same image: g2 vs t3; g4 vs t5, t6 (4/11 each); g5 (no <SEG>) and
    # g6 vs one disjoint target. g1 is alone on its image; g3's only neighbour is empty.
    q = g["question_ignoring"]
    assert q["count"] == 4
    assert q["mDice_own_target"] == pytest.approx(2 / 4, abs=1e-6)
    assert q["mDice_other_target"] == pytest.approx((4 / 11) / 4, abs=1e-6)
    assert samples["g4"]["other_target_dice"] == pytest.approx(4 / 11, abs=1e-6)
    assert samples["g1"]["other_target_dice"] is None
    assert samples["g3"]["other_target_dice"] is None


def test_no_seg_on_an_empty_reference_is_perfect_in_every_metric(tmp_path: Path, capsys):
    """A missing <SEG> is an empty prediction: same score as a <SEG> with an empty mask."""
    root = tmp_path / "corpus"
    image = write_image(root, "ct_00--src--case--2d", (5, 6))
    empty = write_png(root, "masks/empty.png", rect((5, 6)))
    full = write_png(root, "masks/full.png", rect((5, 6), (1, 4, 1, 5)))  # 12 px
    half = write_png(root, "preds/half.png", rect((5, 6), (1, 4, 1, 3)))  # 6 px inside it
    write_json(
        tmp_path / "data.json",
        [grounding(f"e{k}", image, t) for k, t in enumerate((empty, empty, full, full))],
    )
    predictions = [
        {"id": "e0", "answer": "No mask.", "masks": []},  # no <SEG>, nothing to find
        {"id": "e1", "answer": "", "masks": [encode_rle(rect((5, 6)))]},  # <SEG>, empty mask
        {"id": "e2", "answer": "No mask.", "masks": []},  # no <SEG>, something to find
        {"id": "e3", "answer": "", "masks": [half]},  # Dice 2*6/18, IoU 6/12
    ]
    write_jsonl(tmp_path / "pred.jsonl", predictions)
    code, report = _eval(tmp_path, "data.json", "pred.jsonl")
    assert code == 0, capsys.readouterr().err
    samples = {s["id"]: s for s in report["samples"]}
    assert [(samples[f"e{k}"]["dice"], samples[f"e{k}"]["iou"]) for k in range(3)] == [
        (1.0, 1.0),
        (1.0, 1.0),
        (0.0, 0.0),
    ]
    assert [rid for rid, s in samples.items() if s["no_seg"]] == ["e0", "e2"]
    g = report["grounding"]
    assert g["mDice"] == pytest.approx((1 + 1 + 0 + 2 / 3) / 4)
    assert g["mIoU"] == pytest.approx((1 + 1 + 0 + 1 / 2) / 4)
    assert g["gIoU"] == g["mIoU"]  # one empty-mask rule for every metric
    assert g["no_seg_count"] == 2


def test_macro_differs_from_micro_on_two_modalities(tmp_path: Path, capsys):
    root = tmp_path / "corpus"
    image = write_image(root, "ct_00--src--case--2d", (5, 5))
    targets = [write_png(root, f"masks/d{k}.png", rect((5, 5), (k, k + 1, 0, 5))) for k in range(4)]
    modality = ["xray", "fundus", "fundus", "fundus"]  # the field wins over the "ct" prefix
    write_json(
        tmp_path / "data.json",
        [grounding(f"d{k}", image, targets[k], modality=modality[k]) for k in range(4)],
    )
    masks = [[targets[0]], [targets[1]], [], []]  # perfect, perfect, no <SEG>, no <SEG>
    write_jsonl(tmp_path / "pred.jsonl", [{"id": f"d{k}", "masks": masks[k]} for k in range(4)])
    code, report = _eval(tmp_path, "data.json", "pred.jsonl")
    assert code == 0, capsys.readouterr().err
    g = report["grounding"]
    assert g["mDice"] == pytest.approx(2 / 4)  # micro: mean over samples
    assert g["per_modality"]["xray"]["mDice"] == pytest.approx(1.0)
    assert g["per_modality"]["fundus"]["mDice"] == pytest.approx(1 / 3)
    assert g["macro_mDice"] == pytest.approx((1 + 1 / 3) / 2)  # the paper's "overall"
    assert set(g["per_modality"]) == {"xray", "fundus"}


def test_text_metrics_per_task(tmp_path: Path, capsys):
    root = tmp_path / "corpus"
    image = write_image(root, "ct_00--src--case--2d", (6, 6))
    region = write_png(root, "masks/r.png", rect((6, 6), (1, 3, 1, 3)))
    records = [
        vqa("v1", image, "Is there a liver?", "Yes", answer_type="closed"),
        vqa("v2", image, "Is there a spleen?", "yes", answer_type="yes/no"),
        vqa("v3", image, "What is seen?", "liver enlarged", answer_type="open"),
        vqa("r1", image, "What is <region>?", "The kidney", region=region),
    ]
    write_json(tmp_path / "data.json", records)
    answers = {"v1": "Yes.", "v2": "No, it is not.", "v3": "The liver is enlarged", "r1": "kidney"}
    write_jsonl(tmp_path / "pred.jsonl", [{"id": k, "answer": v} for k, v in answers.items()])
    code, report = _eval(tmp_path, "data.json", "pred.jsonl")
    assert code == 0, capsys.readouterr().err
    t = report["text"]
    assert report["grounding"] is None
    assert t["per_task"]["vqa"]["closed_count"] == 2
    assert t["per_task"]["vqa"]["closed_accuracy"] == pytest.approx(0.5)  # v1 right, v2 wrong
    # v3: "liver is enlarged" vs "liver enlarged": 2 common tokens, P = 2/3, R = 1.
    open_ = t["per_answer_kind"]["open"]
    assert open_["count"] == 2  # v3 and the untagged, non-yes/no r1
    assert open_["token_f1"] == pytest.approx((0.8 + 1.0) / 2)
    assert open_["rouge_l"] == pytest.approx((0.8 + 1.0) / 2)
    assert open_["bleu_1"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert open_["exact_match"] == pytest.approx(0.5)  # "kidney" == "The kidney" after norm.
    assert t["per_task"]["region"]["exact_match"] == 1.0
    assert t["overall"]["count"] == 4 and t["overall"]["exact_match"] == pytest.approx(2 / 4)
    assert t["per_question_kind"] == {}  # no record names its kind


def test_text_metrics_per_question_kind(tmp_path: Path, capsys):
    root = tmp_path / "corpus"
    image = write_image(root, "ct_00--src--case--2d", (6, 6))
    region = write_png(root, "masks/r.png", rect((6, 6), (1, 3, 1, 3)))
    records = [
        vqa(
            "p1", image, "Is there a liver?", "Yes", answer_type="closed", question_kind="presence"
        ),
        vqa("p2", image, "Is there a cyst?", "No", answer_type="closed", question_kind="presence"),
        vqa("s1", image, "Left or right?", "Left", answer_type="closed", question_kind="side"),
        vqa(
            "r1",
            image,
            "Is the region <region> the liver?",
            "No",
            region=region,
            answer_type="closed",
            question_kind="verify-region",
        ),
        vqa("u1", image, "What is seen?", "The liver", answer_type="open"),
    ]
    write_json(tmp_path / "data.json", records)
    answers = {"p1": "Yes", "p2": "Yes", "s1": "Left", "r1": "No", "u1": "The liver"}
    write_jsonl(tmp_path / "pred.jsonl", [{"id": k, "answer": v} for k, v in answers.items()])
    code, report = _eval(tmp_path, "data.json", "pred.jsonl")
    assert code == 0, capsys.readouterr().err
    kinds = report["text"]["per_question_kind"]
    assert set(kinds) == {"presence", "side", "verify-region", "unnamed"}
    assert (kinds["presence"]["closed_count"], kinds["presence"]["closed_accuracy"]) == (2, 0.5)
    assert kinds["side"]["closed_accuracy"] == 1.0
    assert kinds["verify-region"]["closed_accuracy"] == 1.0
    assert kinds["unnamed"]["count"] == 1 and kinds["unnamed"]["closed_count"] == 0


def test_bad_lines_and_records_are_reported_not_fatal(corpus: Path, capsys):
    image = "images/ct_00--srcA--case1--2d.png"
    t1 = "masks/t1.png"
    records = [
        grounding("b1", image, t1),
        grounding("b2", image, "masks/missing.png"),  # data problem: mask file missing
        vqa("b3", image, "Is it CT?", "yes", answer_type="closed"),
        grounding("b4", image, t1),
        grounding("b5", image, t1),
        grounding("b6", "images/nowhere.png", t1),  # data problem: image missing
        grounding("b7", image, t1),
    ]
    write_json(corpus / "bad.json", records)
    lines = [
        "{not json",
        {"id": "b1", "masks": ["preds/missing.png"]},  # predicted mask file missing
        {"id": "zzz", "answer": "x"},  # unknown id
        {"id": "b4", "masks": [{"size": [3, 3], "counts": [9]}]},  # RLE of the wrong size
        {"id": "b3", "answer": "yes"},
        {"id": "b3", "answer": "no"},  # duplicate
        {"id": "b5", "masks": "preds/x.png"},  # not a list
        [1, 2],
        {"id": "b2", "masks": []},  # record rejected by the data check: ignored, noted
        {"id": "b7", "masks": [{"size": [6, 10], "counts": "!!"}]},  # corrupt RLE string
    ]
    write_jsonl(corpus / "bad.jsonl", lines)
    code, report = _eval(corpus, "bad.json", "bad.jsonl")
    assert code == 0, capsys.readouterr().err
    assert [s["id"] for s in report["samples"]] == ["b3"]
    found = {(p["stage"], p["index"], p["id"]): p["reason"] for p in report["problems"]}
    assert "not found" in found[("data", 1, "b2")]
    assert "not found" in found[("data", 5, "b6")]
    assert "not valid JSON" in found[("predictions", 1, None)]
    assert "not in the data file" in found[("predictions", 3, "zzz")]
    assert "duplicate" in found[("predictions", 6, "b3")]
    assert "must be a list" in found[("predictions", 7, "b5")]
    assert "not an object" in found[("predictions", 8, None)]
    assert "preds/missing.png not found" in found[("scoring", 0, "b1")]
    assert "RLE size is 3x3" in found[("scoring", 3, "b4")]
    assert "no prediction" in found[("scoring", 4, "b5")]
    assert "bad RLE" in found[("scoring", 6, "b7")]
    assert len(found) == len(report["problems"]) == 11
    assert any("past --limit or bad data" in n for n in report["notes"])


def test_nothing_valid_left_exits_1(corpus: Path, capsys):
    write_jsonl(corpus / "junk.jsonl", ["{oops", {"id": "nope"}, {"answer": "no id"}])
    code, report = _eval(corpus, "data.json", "junk.jsonl")
    assert code == 1
    assert report is not None and report["counts"]["scored"] == 0
    reasons = " | ".join(p["reason"] for p in report["problems"])
    assert "'id' is missing" in reasons and "not in the data file" in reasons
    assert sum(p["reason"] == "no prediction for this id" for p in report["problems"]) == 6


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pred": "absent.jsonl"}, "does not exist"),
        ({"data": "absent.json"}, "does not exist"),
        ({"data": "notjson.json"}, "not valid JSON"),
        ({"pred": "array.jsonl"}, "JSON Lines"),
        ({"images": "nowhere"}, "not a folder"),
        ({"extra": ["--threshold", "0.5"]}, "model runs only"),
        ({"extra": ["--limit", "0"]}, "--limit"),
    ],
)
def test_file_level_errors_exit_2(corpus: Path, capsys, change, message):
    (corpus / "notjson.json").write_text("{")
    (corpus / "array.jsonl").write_text('[{"id": "g1"}]')
    argv = [
        "eval",
        "--predictions",
        str(corpus / change.get("pred", "pred.jsonl")),
        "--data",
        str(corpus / change.get("data", "data.json")),
        "--images",
        str(corpus / change.get("images", "corpus")),
        "--out",
        str(corpus / "r.json"),
        *change.get("extra", []),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "medplib eval: error:" in err and message in err
    assert "Traceback" not in err


def test_each_cases_mask_signals_reach_the_report_checked(corpus: Path, capsys):
    lines = [json.loads(line) for line in (corpus / "pred.jsonl").read_text().splitlines()]
    signals = {
        "g1": {"mask_scores": [0.9, 0.4], "mirror_agreement": [0.95, None]},  # two masks
        "g2": {"mask_scores": [0.5, 0.5]},  # two numbers for one mask
        "g3": {"mirror_agreement": "high"},
        "g4": {"mask_scores": [float("nan")]},
        "g5": {"mask_scores": [], "mirror_agreement": []},  # no <SEG>: nothing to give
    }
    for line in lines:
        line.update(signals.get(line["id"], {}))
    (corpus / "signals.jsonl").write_text(
        "".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8"
    )
    code, report = _eval(corpus, "data.json", "signals.jsonl")
    assert code == 0, capsys.readouterr().err
    samples = {s["id"]: s for s in report["samples"]}
    assert samples["g1"]["mask_scores"] == [0.9, 0.4]
    assert samples["g1"]["mirror_agreement"] == [0.95, None]
    assert (samples["g5"]["mask_scores"], samples["g5"]["mirror_agreement"]) == ([], [])
    for rid in ("g2", "g3", "g4", "g6"):  # refused, or never given
        assert "mask_scores" not in samples[rid] and "mirror_agreement" not in samples[rid], rid
    # A bad value is named, and the case is still scored.
    notes = report["notes"]
    assert "id g2: mask_scores not shown (2 values for 1 mask(s))" in notes
    assert "id g3: mirror_agreement not shown (a str, not a list)" in notes
    assert "id g4: mask_scores not shown (nan is not a finite number)" in notes
    assert samples["g2"]["dice"] == 1.0
