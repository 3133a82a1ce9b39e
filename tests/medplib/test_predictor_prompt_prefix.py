"""The shipped demo checkpoint answers the same with the prompt's start run once per image as
with every prompt run whole, and runs that start once per image."""

from __future__ import annotations

import numpy as np
import pytest

import medplib.predictor as predictor_module
from medplib.data.synthetic import generate_scene


def _scene(modality: str, seed: int):
    return generate_scene(modality, np.random.default_rng(seed), size=128)


def _mask(scene, name):
    (obj,) = [o for o in scene.objects if o.name == name]
    return obj.mask


def _cases():
    xray, derm, us = _scene("xray", 0), _scene("dermoscopy", 6), _scene("ultrasound", 1)
    return [
        # Overturned by the presence check (two teacher-forced passes and a grounding answer).
        ("presence", derm.image, "Is there a blue-white veil in this image?", [], []),
        # Overturned by the region check, with a region in the prompt after the image.
        (
            "region",
            xray.image,
            "Is the region <region> the left lung?",
            [_mask(xray, "right lung")],
            [],
        ),
        # Overturned by the side check, which also asks about the mirrored image.
        ("side", us.image, "Is the vessel on the left or right side of the image?", [], []),
        (
            "grounding",
            xray.image,
            "Please generate a mask that segments the nodule in this image.",
            [],
            [],
        ),
        ("history", xray.image, "And the modality?", [], [("Is there a nodule?", "Yes.")]),
    ]


CASES = _cases()


def _ask(predictor, image, question, regions, history):
    predictor.set_image(image)
    return predictor.ask(question, regions, history=history, max_new_tokens=24)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_answers_are_those_of_the_whole_prompt(predictor, monkeypatch, case):
    _, image, question, regions, history = case
    split = _ask(predictor, image, question, regions, history)
    monkeypatch.setattr(predictor_module, "reusable", lambda moe: False)
    whole = _ask(predictor, image, question, regions, history)
    assert split.answer == whole.answer and split.answer
    assert split.answer_token_ids == whole.answer_token_ids
    assert split.warnings == whole.warnings
    assert split.num_prompt_tokens == whole.num_prompt_tokens
    for name in ("side_vote", "presence_vote", "region_vote"):
        a, b = getattr(split, name), getattr(whole, name)
        assert (a is None) == (b is None)
        if a is not None:
            assert a.answer == b.answer and a.plain == b.plain
            assert a.margin == pytest.approx(b.margin, abs=1e-3)
    assert len(split.masks) == len(whole.masks)
    for m, n in zip(split.masks, whole.masks, strict=True):
        assert (m.mask != n.mask).sum() <= 0.001 * m.mask.size
        assert m.score == pytest.approx(n.score, abs=1e-3)
    # The routing record covers the whole prompt either way.
    assert split.routing.prompt_image_share == whole.routing.prompt_image_share
    assert split.routing.prompt_text_share == whole.routing.prompt_text_share
    assert (
        len(split.routing.prompt_image_share)
        == predictor.config.language.llama["num_hidden_layers"]
    )
    assert split.routing.answer_experts == whole.routing.answer_experts


def test_the_prompt_start_runs_once_per_image(predictor, monkeypatch):
    runs: list[int] = []
    real = predictor_module.encode_prefix

    def counted(model, embeds):
        runs.append(int(embeds.shape[1]))
        return real(model, embeds)

    monkeypatch.setattr(predictor_module, "encode_prefix", counted)
    derm = _scene("dermoscopy", 6)
    predictor.set_image(derm.image)
    first = predictor.ask("Is there a blue-white veil in this image?", max_new_tokens=8)
    # The decode, both teacher-forced answers and the grounding question share one start.
    assert first.presence_vote is not None and first.presence_vote.mask_score is not None
    assert len(runs) == 1
    # Its length: the system prompt and the image's visual tokens.
    assert runs[0] > predictor.config.vision.num_patches
    predictor.ask("What imaging modality is this?", max_new_tokens=8)
    assert len(runs) == 1
    predictor.set_image(derm.image)  # a new encoding, even of the same pixels
    predictor.ask("What imaging modality is this?", max_new_tokens=8)
    assert len(runs) == 2
    xray = _scene("xray", 0)
    predictor.predict_batch([xray.image, derm.image], ["Is this an X-ray?"] * 2, max_new_tokens=8)
    assert len(runs) == 4
    # The batch's two images took both places in the store: the set image's start runs again.
    predictor.ask("Is there a nodule in this image?", max_new_tokens=8)
    assert len(runs) == 5
    predictor.reset_image()
    predictor.predict_batch([xray.image], ["Is this an X-ray?"], max_new_tokens=8)
    assert len(runs) == 6
