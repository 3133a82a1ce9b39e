"""The shipped demo checkpoint's yes/no answers about a marked region, checked against the
named structure's mask."""

from __future__ import annotations

import numpy as np
import pytest

from medplib.data.synthetic import generate_scene


@pytest.fixture(scope="module")
def scene():
    # A chest X-ray whose right lung the demo model calls the left lung when asked, and whose
    # nodule it says is not the nodule.
    return generate_scene("xray", np.random.default_rng(0), size=128)


def _mask(scene, name):
    (obj,) = [o for o in scene.objects if o.name == name]
    return obj.mask


def _ask(predictor, scene, question, regions, **kw):
    predictor.set_image(scene.image)
    return predictor.ask(question, regions, max_new_tokens=8, **kw)


def test_the_shipped_config_checks_unsure_region_answers(demo):
    assert demo.config.region_check_max_margin == 4.0
    assert demo.config.region_check_min_coverage == 0.5


def test_a_yes_for_a_neighbours_region_is_overturned(predictor, scene):
    right_lung = _mask(scene, "right lung")
    pred = _ask(predictor, scene, "Is the region <region> the left lung?", [right_lung])
    vote = pred.region_vote
    assert vote is not None and vote.structure == "left lung" and vote.plain == "Yes"
    assert abs(vote.margin) < 4.0 and vote.coverage is not None and vote.coverage < 0.5
    assert pred.answer == pred.raw_answer == "No"
    decoded = predictor.tokenizer.decode(pred.answer_token_ids, skip_special_tokens=True)
    assert decoded.strip() == "No"
    assert any("the left lung it outlines covers" in w for w in pred.warnings)
    assert pred.to_dict()["region_vote"]["plain"] == "Yes"


def test_a_no_for_the_structures_own_region_is_overturned(predictor, scene):
    nodule = _mask(scene, "nodule")
    pred = _ask(predictor, scene, "Does the area <region> show the nodule?", [nodule])
    vote = pred.region_vote
    assert vote is not None and vote.plain == "No" and vote.coverage >= 0.5
    assert pred.answer == "Yes"


def test_a_point_and_a_box_are_judged_by_the_share_of_them_covered(predictor, scene):
    nodule = _mask(scene, "nodule")
    ys, xs = np.nonzero(nodule)
    y, x = int(np.median(ys)), int(np.median(xs))
    point = np.zeros_like(nodule)
    point[y - 1 : y + 2, x - 1 : x + 2] = True
    assert (point & nodule).sum() == point.sum()  # the point lies on the nodule
    by_point = _ask(predictor, scene, "Is this the nodule?", [point])
    assert by_point.region_vote is not None and by_point.region_vote.structure == "nodule"
    assert by_point.region_vote.coverage == 1.0 and by_point.answer == "Yes"
    box = np.zeros_like(nodule)
    box[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
    by_box = _ask(predictor, scene, "Is the region <region> the nodule?", [box])
    assert by_box.region_vote is not None and by_box.answer == "Yes"


def test_a_confident_answer_is_kept_and_draws_no_mask(predictor, scene):
    predictor.config.region_check_max_margin = 0.001
    pred = _ask(
        predictor, scene, "Is the region <region> the left lung?", [_mask(scene, "right lung")]
    )
    assert pred.region_vote is not None and pred.region_vote.coverage is None
    assert pred.answer == pred.region_vote.plain == "Yes"


def test_only_single_greedy_questions_about_one_region_are_checked(predictor, scene):
    right_lung, nodule = _mask(scene, "right lung"), _mask(scene, "nodule")
    question = "Is the region <region> the left lung?"
    predictor.config.region_check_max_margin = None
    assert _ask(predictor, scene, question, [right_lung]).region_vote is None
    predictor.config.region_check_max_margin = 4.0
    assert _ask(predictor, scene, "What is <region>?", [right_lung]).region_vote is None
    two = _ask(
        predictor, scene, "Is the region <region> the left lung? <region>", [right_lung, nodule]
    )
    assert two.region_vote is None
    history = [("What imaging modality is this?", "X-ray")]
    assert _ask(predictor, scene, question, [right_lung], history=history).region_vote is None
    sampled = _ask(predictor, scene, question, [right_lung], temperature=0.7, seed=0)
    assert sampled.region_vote is None
    # Without a region, the side and presence checks are the ones that apply.
    assert _ask(predictor, scene, "Is there a nodule in this image?", []).region_vote is None
