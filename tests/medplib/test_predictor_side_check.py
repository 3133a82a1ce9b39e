"""The shipped demo checkpoint's left/right answers, checked on the mirrored image."""

from __future__ import annotations

import numpy as np
import pytest

from medplib.data.synthetic import generate_scene

# An ultrasound scene whose vessel the demo model calls "Left" on the image and on its mirror:
# it leans to one side (log-odds about 0.4) rather than reading the image.
SCENE = ("ultrasound", 1)
QUESTION = "Is the vessel on the left or right side of the image?"


def _scene_images():
    modality, seed = SCENE
    scene = generate_scene(modality, np.random.default_rng(seed), size=128)
    return scene.image, np.ascontiguousarray(scene.image[:, ::-1])


def _ask(predictor, image, question=QUESTION, **kw):
    predictor.set_image(image)
    return predictor.ask(question, max_new_tokens=8, **kw)


def test_the_shipped_config_checks_unsure_side_answers(demo):
    assert demo.config.side_tta_max_margin == 2.0


def test_a_leaning_answer_is_overturned_and_the_mirror_gets_the_other_side(predictor):
    predictor.config.side_tta_max_margin = 2.0
    image, mirrored = _scene_images()
    on_image, on_mirror = _ask(predictor, image), _ask(predictor, mirrored)
    a, b = on_image.side_vote, on_mirror.side_vote
    assert a is not None and b is not None
    assert a.plain == b.plain == "Left"  # the lean: the same side on both views
    # Each view's margin is the other's mirror margin: one pair of numbers decides both.
    assert a.margin == pytest.approx(b.mirror_margin, abs=1e-3)
    assert a.mirror_margin == pytest.approx(b.margin, abs=1e-3)
    assert abs(a.margin) < 2.0 and abs(b.margin) < 2.0
    assert {on_image.answer, on_mirror.answer} == {"Left", "Right"}
    overturned = on_image if on_image.answer != "Left" else on_mirror
    assert overturned.side_vote.answer == overturned.answer == overturned.raw_answer == "Right"
    decoded = predictor.tokenizer.decode(overturned.answer_token_ids, skip_special_tokens=True)
    assert decoded.strip() == "Right"
    assert overturned.to_dict()["side_vote"]["plain"] == "Left"
    # The swap is said beside the answer; the kept one carries no such note.
    assert any("leaned to 'Left'" in w for w in overturned.warnings)
    kept = on_mirror if overturned is on_image else on_image
    assert not any("leaned" in w for w in kept.warnings)


def test_a_confident_answer_is_kept(predictor):
    predictor.config.side_tta_max_margin = 0.01  # every margin here is larger
    image, mirrored = _scene_images()
    for view in (image, mirrored):
        pred = _ask(predictor, view)
        assert pred.side_vote is not None and pred.answer == pred.side_vote.plain == "Left"


def test_only_bare_side_answers_to_single_side_questions_are_checked(predictor):
    image, _ = _scene_images()
    predictor.config.side_tta_max_margin = None
    plain = _ask(predictor, image)
    assert plain.side_vote is None and plain.answer == "Left"
    assert plain.to_dict()["side_vote"] is None
    predictor.config.side_tta_max_margin = 2.0
    assert _ask(predictor, image, "What imaging modality is this?").side_vote is None
    region = np.zeros(image.shape[:2], dtype=bool)
    region[40:60, 40:60] = True
    asked_with_region = _ask(
        predictor, image, "Is <region> on the left or right side?", regions=[region]
    )
    assert asked_with_region.side_vote is None
    with_history = _ask(
        predictor, image, history=[("What imaging modality is this?", "Ultrasound")]
    )
    assert with_history.side_vote is None
    sampled = _ask(predictor, image, temperature=0.7, seed=0)
    assert sampled.side_vote is None
