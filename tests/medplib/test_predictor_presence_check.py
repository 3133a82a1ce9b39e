"""The shipped demo checkpoint's yes/no presence answers, checked against the structure's mask."""

from __future__ import annotations

import numpy as np

from medplib.data.synthetic import generate_scene

# Dermoscopy scenes where the demo model answers from the name rather than the image: it says
# "No" to the blue-white veil that seed 6 shows, and "Yes" to the dark globules seed 2 lacks.
PRESENT = (6, "Is there a blue-white veil in this image?", "blue-white veil")
ABSENT = (2, "Are there dark globules in this image?", "dark globules")


def _scene(seed: int):
    return generate_scene("dermoscopy", np.random.default_rng(seed), size=128)


def _ask(predictor, scene_seed, question, **kw):
    predictor.set_image(_scene(scene_seed).image)
    return predictor.ask(question, max_new_tokens=8, **kw)


def test_the_scenes_hold_what_the_questions_ask_about():
    seed, _, name = PRESENT
    assert name in [o.name for o in _scene(seed).objects]
    seed, _, name = ABSENT
    assert name in _scene(seed).absent


def test_the_shipped_config_checks_unsure_presence_answers(demo):
    assert demo.config.presence_check_max_margin == 0.5
    assert demo.config.presence_check_min_mask_score == 0.85


def test_an_unsure_no_is_overturned_by_a_confident_mask(predictor):
    seed, question, name = PRESENT
    pred = _ask(predictor, seed, question)
    vote = pred.presence_vote
    assert vote is not None and vote.structure == name
    assert vote.plain == "No" and abs(vote.margin) < 0.5
    assert vote.mask_score is not None and vote.mask_score >= 0.85
    assert pred.answer == pred.raw_answer == vote.answer == "Yes"
    decoded = predictor.tokenizer.decode(pred.answer_token_ids, skip_special_tokens=True)
    assert decoded.strip() == "Yes"
    assert pred.masks == []  # the mask decided the answer; it is not the answer's own
    assert any(f"outline the {name}, it draws a confident mask" in w for w in pred.warnings)
    assert pred.to_dict()["presence_vote"]["plain"] == "No"


def test_an_unsure_yes_without_a_confident_mask_becomes_no(predictor):
    seed, question, name = ABSENT
    pred = _ask(predictor, seed, question)
    vote = pred.presence_vote
    assert vote is not None and vote.plain == "Yes"
    assert vote.mask_score is not None and vote.mask_score < 0.85
    assert pred.answer == "No"
    assert any("finds no confident mask" in w for w in pred.warnings)


def test_a_confident_answer_is_kept_and_draws_no_mask(predictor):
    predictor.config.presence_check_max_margin = 0.001  # every margin here is larger
    for seed, question, _ in (PRESENT, ABSENT):
        pred = _ask(predictor, seed, question)
        vote = pred.presence_vote
        assert vote is not None and vote.mask_score is None
        assert pred.answer == vote.plain
        assert not any("outline" in w for w in pred.warnings)


def test_the_score_bar_decides(predictor):
    seed, question, _ = PRESENT
    predictor.config.presence_check_min_mask_score = 0.99  # above this scene's mask
    pred = _ask(predictor, seed, question)
    assert pred.presence_vote.mask_score < 0.99 and pred.answer == "No"


def test_only_single_greedy_presence_questions_are_checked(predictor):
    seed, question, _ = PRESENT
    predictor.config.presence_check_max_margin = None
    plain = _ask(predictor, seed, question)
    assert plain.presence_vote is None and plain.answer == "No"
    assert plain.to_dict()["presence_vote"] is None
    predictor.config.presence_check_max_margin = 0.5
    assert _ask(predictor, seed, "What imaging modality is this?").presence_vote is None
    region = np.zeros((128, 128), dtype=bool)
    region[40:60, 40:60] = True
    with_region = _ask(predictor, seed, "Is there a blue-white veil in <region>?", regions=[region])
    assert with_region.presence_vote is None
    with_history = _ask(
        predictor, seed, question, history=[("What imaging modality is this?", "Dermoscopy")]
    )
    assert with_history.presence_vote is None
    sampled = _ask(predictor, seed, question, temperature=0.7, seed=0)
    assert sampled.presence_vote is None
