"""The shipped demo checkpoint answers the same with the prompt's start run once per image as
with every prompt run whole, and runs that start once per image."""

from __future__ import annotations

import numpy as np
import pytest

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
def test_answers_are_those_of_the_whole_prompt(predictor, case):
    _, image, question, regions, history = case
    split = _ask(predictor, image, question, regions, history)
    predictor.reuse_prompt_start = False
    try:
        whole = _ask(predictor, image, question, regions, history)
    finally:
        predictor.reuse_prompt_start = True
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


def test_the_image_runs_through_the_language_model_once_per_image(predictor):
    # Every language-model call long enough to hold the visual tokens, by its length.
    runs: list[int] = []
    patches = predictor.config.vision.num_patches

    def count(module, args, kwargs):
        length = int(kwargs["inputs_embeds"].shape[1])
        if length >= patches:
            runs.append(length)

    assert predictor.reuse_prompt_start
    handle = predictor.model.language_model.model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        derm = _scene("dermoscopy", 6)
        predictor.set_image(derm.image)
        first = predictor.ask("Is there a blue-white veil in this image?", max_new_tokens=8)
        # The decode, both teacher-forced answers and the grounding question share one start:
        # the decode's prefill ran it, and the checks read only their own questions.
        assert first.presence_vote is not None and first.presence_vote.mask_score is not None
        assert runs == [first.num_prompt_tokens]
        predictor.ask("What imaging modality is this?", max_new_tokens=8)
        assert len(runs) == 1
        predictor.set_image(derm.image)  # a new encoding, even of the same pixels
        predictor.ask("What imaging modality is this?", max_new_tokens=8)
        assert len(runs) == 2
        xray = _scene("xray", 0)
        predictor.predict_batch(
            [xray.image, derm.image], ["Is this an X-ray?"] * 2, max_new_tokens=8
        )
        assert len(runs) == 4
        # The batch's two images took both places in the store: the set image's start runs
        # again.
        predictor.ask("Is there a nodule in this image?", max_new_tokens=8)
        assert len(runs) == 5
        predictor.reset_image()
        predictor.predict_batch([xray.image], ["Is this an X-ray?"], max_new_tokens=8)
        assert len(runs) == 6
    finally:
        handle.remove()


def test_a_model_that_can_drop_tokens_runs_every_prompt_whole(predictor, monkeypatch):
    # An expert capacity below the token count would make a token's fate depend on the others in
    # its forward call; the prompt is then never split.
    monkeypatch.setattr(predictor.config.moe, "eval_capacity_factor", 1.5)
    runs: list[int] = []
    handle = predictor.model.language_model.model.register_forward_pre_hook(
        lambda m, a, kw: runs.append(int(kw["inputs_embeds"].shape[1])), with_kwargs=True
    )
    try:
        predictor.set_image(_scene("dermoscopy", 6).image)
        first = predictor.ask("What imaging modality is this?", max_new_tokens=4)
        predictor.ask("What imaging modality is this?", max_new_tokens=4)
    finally:
        handle.remove()
    whole = [n for n in runs if n == first.num_prompt_tokens]
    assert len(whole) == 2


@pytest.mark.parametrize("reuse", [True, False])
def test_answers_weighed_together_score_as_weighed_alone(predictor, reuse):
    # Answers of different lengths share one batch, padded after the shorter ones.
    predictor.reuse_prompt_start = reuse
    try:
        derm = _scene("dermoscopy", 6)
        predictor.set_image(derm.image)
        enc = predictor._image
        turns = [("Is there a blue-white veil in this image?", None)]
        answers = ("Yes", "No, there is no blue-white veil in this image.", "No")
        together = predictor._answer_logprobs(enc, turns, answers)
        alone = [predictor._answer_logprobs(enc, turns, (a,))[0] for a in answers]
    finally:
        predictor.reuse_prompt_start = True
    assert together == pytest.approx(alone, abs=1e-3)
    assert all(v < 0 for v in together)  # log-probabilities of whole answers
