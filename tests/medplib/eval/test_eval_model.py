"""`medplib eval` running the default (untrained) checkpoint on a 3-record fixture."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_helpers import grounding, rect, vqa, write_image, write_json, write_png

import medplib.cli.eval as eval_cli
from medplib.checkpoint import default_checkpoint_dir
from medplib.cli import main
from medplib.eval import REPORT_FORMAT, read_predictions
from medplib.masks import decode_rle
from medplib.presence_check import PresenceVote

HW = (40, 56)  # (H, W), not square


# The untrained fallback is under test here, not the bundled demo checkpoint.
pytestmark = pytest.mark.usefixtures("untrained_default")


@pytest.fixture()
def fixture(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    image = write_image(root, "ct_00--toy--case1--2d", HW)
    liver = write_png(root, "masks/liver.png", rect(HW, (5, 25, 10, 40)))
    spleen = write_png(root, "masks/spleen.png", rect(HW, (20, 35, 30, 50)))
    records = [
        grounding("seg", image, liver, question="Please segment the liver."),
        vqa("ask", image, "Is this a CT scan?", "Yes", answer_type="closed"),
        {  # two turns: scored on the second, the first (with its region) is history
            "id": "reg",
            "image": image,
            "conversations": [
                {"from": "human", "value": f"<image>\nWhat is <region>{spleen}</region>?"},
                {"from": "gpt", "value": "The spleen."},
                {"from": "human", "value": f"Is <region>{liver}</region> larger?"},
                {"from": "gpt", "value": "Yes"},
            ],
        },
    ]
    write_json(tmp_path / "data.json", records)
    return tmp_path


def _argv(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "--data",
        str(tmp_path / "data.json"),
        "--images",
        str(tmp_path / "corpus"),
        "--out",
        str(tmp_path / "out" / "report.json"),
        "--html",
        str(tmp_path / "out" / "report.html"),
        "--max-new-tokens",
        "4",
        *extra,
    ]


def test_default_checkpoint_run_writes_a_valid_report(fixture: Path, capsys):
    checkpoint = str(default_checkpoint_dir())
    code = main(_argv(fixture, "--checkpoint", checkpoint))
    cap = capsys.readouterr()
    assert code == 0, cap.err
    report = json.loads((fixture / "out" / "report.json").read_text())
    assert report["format"] == REPORT_FORMAT and report["inputs"]["mode"] == "model"
    assert report["inputs"]["flip_tta_min_agreement"] is None  # the untrained config's: off
    assert report["inputs"]["side_tta_max_margin"] is None
    assert report["counts"]["scored"] == 3 and report["problems"] == []
    assert {s["task"] for s in report["samples"]} == {"grounding", "vqa", "region"}
    g = report["grounding"]
    assert g["count"] == 1 and 0.0 <= g["mDice"] <= 1.0
    assert report["thresholds"]["primary"] == 0.1
    assert report["text"]["overall"]["count"] == 2
    assert any("untrained" in n for n in report["notes"])
    records, problems = read_predictions(fixture / "out" / "report.predictions.jsonl")
    assert problems == [] and [r.id for r in records] == ["seg", "ask", "reg"]
    assert all(r.extra["threshold"] == 0.1 for r in records)
    page = (fixture / "out" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page


class CyclicHead(torch.nn.Module):
    """LM head replaying one token script per answer (the script must end with </s>)."""

    def __init__(self, script: list[int], vocab_size: int) -> None:
        super().__init__()
        self.script, self.vocab_size, self.calls = script, vocab_size, 0

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = torch.full((*hidden.shape[:-1], self.vocab_size), -1e4)
        logits[..., self.script[self.calls % len(self.script)]] = 1e4
        self.calls += 1
        return logits


def test_seg_answers_are_scored_at_both_thresholds_and_rescore_identically(
    fixture: Path, capsys, monkeypatch
):
    real_loader = eval_cli.load_predictor

    def scripted(checkpoint, device):
        predictor = real_loader(checkpoint, device)
        tok = predictor.tokenizer
        seg = tok.convert_tokens_to_ids("<SEG>")
        words = tok("liver ", add_special_tokens=False)["input_ids"]
        script = [*words, seg, seg, tok.eos_token_id]  # two masks per answer: scored as a union
        predictor.model.language_model.lm_head = CyclicHead(script, len(tok))
        return predictor

    monkeypatch.setattr(eval_cli, "load_predictor", scripted)
    code = main(_argv(fixture, "--limit", "1"))
    assert code == 0, capsys.readouterr().err
    out = fixture / "out"
    report = json.loads((out / "report.json").read_text())
    sample = report["samples"][0]
    assert sample["id"] == "seg" and sample["num_masks"] == 2 and not sample["no_seg"]
    assert report["thresholds"]["extra"] == ["0.5"]
    assert set(report["grounding"]["by_threshold"]) == {"0.5"}
    (record,), _ = read_predictions(out / "report.predictions.jsonl")
    low = [decode_rle(m) for m in record.masks]
    high = [decode_rle(m) for m in record.masks_by_threshold["0.5"]]
    assert len(low) == len(high) == 2 and low[0].shape == HW
    for lo, hi in zip(low, high, strict=True):
        assert not np.any(hi & ~lo)  # p > 0.5 implies p > 0.1
    assert sample["pred_area"] == int(np.count_nonzero(low[0] | low[1]))
    target = rect(HW, (5, 25, 10, 40))
    for key, masks in (("dice", low), ("dice@0.5", high)):
        union = masks[0] | masks[1]
        hand = 2 * np.count_nonzero(union & target) / (union.sum() + target.sum())
        assert sample[key] == pytest.approx(hand, abs=1e-9)

    # The saved predictions, scored without a model, give the same numbers.
    rescored = out / "rescored.json"
    argv = ["eval", "--predictions", str(out / "report.predictions.jsonl")]
    argv += ["--data", str(fixture / "data.json"), "--images", str(fixture / "corpus")]
    assert main([*argv, "--out", str(rescored), "--limit", "1"]) == 0
    again = json.loads(rescored.read_text())
    for key in ("mDice", "mIoU", "cIoU", "gIoU", "no_seg_rate"):
        assert again["grounding"][key] == report["grounding"][key]
        assert (
            again["grounding"]["by_threshold"]["0.5"][key]
            == (report["grounding"]["by_threshold"]["0.5"][key])
        )
    assert again["thresholds"]["primary"] == 0.1


@pytest.mark.parametrize("gate", [None, 0.0])
def test_each_masks_confidence_signals_are_kept_beside_it(fixture: Path, capsys, monkeypatch, gate):
    """Score and mirror agreement per mask, in mask order, so they can be read against Dice."""
    real_loader = eval_cli.load_predictor
    seen = []

    def scripted(checkpoint, device):
        predictor = real_loader(checkpoint, device)
        predictor.config.flip_tta_min_agreement = gate
        tok = predictor.tokenizer
        seg = tok.convert_tokens_to_ids("<SEG>")
        script = [*tok("liver ", add_special_tokens=False)["input_ids"], seg, seg, tok.eos_token_id]
        predictor.model.language_model.lm_head = CyclicHead(script, len(tok))
        real_ask = predictor.ask

        def ask(*args, **kwargs):
            seen.append(real_ask(*args, **kwargs))
            return seen[-1]

        predictor.ask = ask
        return predictor

    monkeypatch.setattr(eval_cli, "load_predictor", scripted)
    assert main(_argv(fixture, "--limit", "1")) == 0, capsys.readouterr().err
    (record,), _ = read_predictions(fixture / "out" / "report.predictions.jsonl")
    (pred,) = seen
    assert record.extra["mask_scores"] == [m.score for m in pred.masks]
    assert len(record.extra["mask_scores"]) == 2
    agreements = record.extra["mirror_agreement"]
    if gate is None:
        assert agreements == [None, None]
    else:
        assert agreements == [m.mirror_agreement for m in pred.masks]
        assert all(0.0 <= a <= 1.0 for a in agreements)


def test_how_an_answer_was_checked_is_kept_beside_it(fixture: Path, capsys, monkeypatch):
    """A presence answer the grounding check overturned keeps its vote in the predictions."""
    real_loader = eval_cli.load_predictor
    vote = PresenceVote("No", "Yes", "liver", margin=-0.2, mask_score=0.93, answer="Yes")

    def checked(checkpoint, device):
        predictor = real_loader(checkpoint, device)
        real_ask = predictor.ask

        def ask(question, *args, **kwargs):
            pred = real_ask(question, *args, **kwargs)
            return replace(pred, presence_vote=vote) if "CT scan" in question else pred

        predictor.ask = ask
        return predictor

    monkeypatch.setattr(eval_cli, "load_predictor", checked)
    assert main(_argv(fixture)) == 0, capsys.readouterr().err
    records, _ = read_predictions(fixture / "out" / "report.predictions.jsonl")
    by_id = {r.id: r for r in records}
    assert by_id["ask"].extra["presence_vote"] == vote.to_dict()
    assert by_id["ask"].extra["side_vote"] is None
    assert by_id["seg"].extra["presence_vote"] is None
    assert by_id["reg"].extra["region_vote"] is None  # two turns: not checked
