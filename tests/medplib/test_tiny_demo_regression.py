"""The shipped demo checkpoint answers as it did when its answers were recorded.

`fixtures/tiny_demo_answers.json` holds what `MedPLIBPredictor.from_pretrained()` said about
fixed synthetic scenes before the move to transformers 5 (see
`fixtures/make_tiny_demo_answers.py`, which made it and documents how). Every answer must come
back token for token and every `<SEG>` mask with Dice >= 0.99 against the recorded one.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from medplib.masks import decode_rle
from medplib.metrics import dice
from medplib.predictor import MedPLIBPredictor, Prediction

FIXTURES = Path(__file__).parent / "fixtures"
RECORD = json.loads((FIXTURES / "tiny_demo_answers.json").read_text())
ENTRIES = RECORD["entries"]
MIN_DICE = 0.99


def _recorder():
    """The script that made the record: the same scenes and region prompts, by the same code."""
    spec = importlib.util.spec_from_file_location(
        "make_tiny_demo_answers", FIXTURES / "make_tiny_demo_answers.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def predictor():
    threads = torch.get_num_threads()
    torch.set_num_threads(RECORD["threads"])  # float sums in the recorded order
    try:
        yield MedPLIBPredictor.from_pretrained()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def predictions(predictor) -> list[Prediction]:
    recorder = _recorder()
    out: list[Prediction] = []
    current = None
    for entry in ENTRIES:
        scene_key = tuple(entry["scene"].values())
        if scene_key != current:
            image = recorder.scene_for(**entry["scene"]).image
            predictor.set_image(image)
            current = scene_key
        regions = recorder.region_masks(entry, predictor.image_hw)
        out.append(
            predictor.ask(entry["question"], regions, max_new_tokens=RECORD["max_new_tokens"])
        )
    return out


def _entry_id(entry: dict) -> str:
    return f"{entry['scene']['modality']}-{entry['kind']}-{entry['question'][:24]}"


def test_record_covers_every_kind_of_question():
    kinds = Counter(e["kind"] for e in ENTRIES)
    assert kinds["grounding"] >= 5 and kinds["vqa-closed"] >= 5 and kinds["vqa-open"] >= 3
    assert kinds["region-box"] >= 3 and kinds["region-point"] >= 3
    # Every grounding answer carries its mask; an answer of another kind may carry one too (this
    # checkpoint answers one side question with a stray <SEG>), recorded as it is.
    assert all(len(e["masks"]) == 1 for e in ENTRIES if e["kind"] == "grounding")
    masks = [decode_rle(m) for e in ENTRIES for m in e["masks"]]
    assert all(m.sum() > 50 for m in masks)  # real shapes, not empty or speck masks
    assert {m.shape for m in masks} == {(128, 128), (160, 160)}


def test_the_shipped_checkpoint_is_the_one_recorded(predictor):
    assert predictor.checkpoint_id == RECORD["checkpoint_id"]


@pytest.mark.parametrize("index", range(len(ENTRIES)), ids=[_entry_id(e) for e in ENTRIES])
def test_same_answer_as_recorded(predictions, index):
    entry, pred = ENTRIES[index], predictions[index]
    assert pred.answer_token_ids == entry["answer_token_ids"]
    assert pred.answer == entry["answer"]
    assert pred.raw_answer == entry["raw_answer"]
    assert pred.finish_reason == entry["finish_reason"]


@pytest.mark.parametrize(
    "index",
    [i for i, e in enumerate(ENTRIES) if e["masks"]],
    ids=[_entry_id(e) for e in ENTRIES if e["masks"]],
)
def test_same_masks_as_recorded(predictions, index):
    entry, pred = ENTRIES[index], predictions[index]
    assert len(pred.masks) == len(entry["masks"])
    for got, rle in zip(pred.masks, entry["masks"], strict=True):
        want = decode_rle(rle)
        assert got.mask.shape == want.shape
        assert dice(got.mask, want) >= MIN_DICE


def test_masks_differ_between_structures(predictions):
    # Guards the Dice check itself: two structures of one scene must not pass as each other.
    first = [i for i, e in enumerate(ENTRIES) if e["masks"]][:2]
    a, b = (np.asarray(predictions[i].masks[0].mask) for i in first)
    assert dice(a, b) < 0.5
