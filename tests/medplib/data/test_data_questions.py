"""Generated questions: every answer agrees with the masks it was made from."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from medplib.data.questions import (
    MODALITY_ANSWER,
    OFFICIAL_SEGMENT,
    SEGMENT,
    SEGMENT_ANSWER,
    appearance,
    clear_side,
    is_plural,
    make_questions,
)
from medplib.data.synthetic import MODALITIES, Scene, SceneObject, generate_scene


def _all(n: int = 12, seed: int = 0):
    for modality in MODALITIES:
        for i in range(n):
            rng = np.random.default_rng([seed, MODALITIES.index(modality), i])
            scene = generate_scene(modality, rng)
            paths = {
                o.name: f"masks/{modality}{i}--{o.name.replace(' ', '_')}.png"
                for o in scene.objects
            }
            yield scene, paths, make_questions(scene, paths, rng)


def _named(question: str, scene) -> str:
    """The structure a question asks about (the longest scene or vocabulary name it contains)."""
    names = [o.name for o in scene.objects] + list(scene.absent)
    hits = [n for n in names if re.search(rf"\b{re.escape(n)}\b", question)]
    return max(hits, key=len)


def test_every_record_has_a_task_kind_and_answer_type():
    tasks = Counter()
    for _, _, qas in _all(4):
        for qa in qas:
            tasks[qa.task] += 1
            assert qa.question.startswith("<image>\n") and qa.question.count("<image>") == 1
            assert qa.answer_type in ("open", "closed")
            assert qa.answer
    assert set(tasks) == {"vqa", "region", "grounding"}


def test_closed_answers_agree_with_the_masks():
    checked = Counter()
    for scene, _, qas in _all():
        objects = {o.name: o for o in scene.objects}
        for qa in qas:
            if qa.kind == "presence":
                name = _named(qa.question, scene)
                assert qa.answer == ("Yes" if name in objects else "No")
            elif qa.kind in ("side", "height"):
                name = _named(qa.question, scene)
                side = clear_side(objects[name].mask, 1 if qa.kind == "side" else 0)
                assert side is not None and qa.answer == side.capitalize()
            elif qa.kind == "size":
                a, b = re.findall(
                    r"the ([\w\- ]+?)(?: or|\?)", qa.question.split(",")[-1].split(":")[-1]
                )
                areas = {n: objects[n].mask.sum() for n in (a, b)}
                pick = min if "smaller" in qa.question else max
                assert qa.answer == f"The {pick(areas, key=areas.get)}"
            elif qa.kind == "modality":
                assert qa.answer == MODALITY_ANSWER[scene.modality]
            else:
                continue
            checked[qa.kind] += 1
    assert min(checked.values()) >= 5 and len(checked) == 5


def test_region_questions_point_at_the_mask_of_the_structure_they_name():
    kinds = Counter()
    for _, paths, qas in _all():
        by_path = {p: n for n, p in paths.items()}
        for qa in (q for q in qas if q.task == "region"):
            (path,) = re.findall(r"<region>(.*?)</region>", qa.question)
            name = by_path[path]
            kinds[qa.kind] += 1
            if qa.kind == "name-region":
                assert qa.answer == f"The {name}."
            elif qa.kind == "describe-region":
                assert qa.answer.startswith(f"This area shows the {name},")
            else:
                assert qa.answer == ("Yes" if qa.question.endswith(f" the {name}?") else "No")
    assert set(kinds) == {"name-region", "describe-region", "verify-region"}


def test_grounding_answers_name_the_target_before_seg_and_point_at_its_mask():
    questions, answers = Counter(), Counter()
    for scene, paths, qas in _all():
        for qa in (q for q in qas if q.task == "grounding"):
            name = _named(qa.question, scene)
            assert qa.answer.count("<SEG>") == 1
            assert name in qa.answer.split("<SEG>")[0]
            assert f"<SEG><mask>{paths[name]}</mask>" in qa.answer
            questions[qa.question.replace(name, "X")] += 1
            answers[qa.answer.replace(name, "X").replace(paths[name], "P")] += 1
    assert len({q.split(" in this ")[0] for q in questions}) >= len(SEGMENT) - 1
    assert len(answers) >= len(SEGMENT_ANSWER)


def test_several_targets_per_image_are_grounded():
    counts = [len([q for q in qas if q.task == "grounding"]) for _, _, qas in _all(6)]
    assert min(counts) >= 2


def test_yes_and_no_are_balanced_enough():
    answers = Counter(qa.answer for _, _, qas in _all(20) for qa in qas if qa.kind == "presence")
    assert answers["Yes"] > 20 and answers["No"] > 20


@pytest.mark.parametrize(
    ("name", "plural"),
    [("vessels", True), ("dark globules", True), ("nuclei", True), ("pancreas", False),
     ("gluteus maximus", False), ("liver", False), ("inflammatory cells", True)],
)  # fmt: skip
def test_is_plural(name: str, plural: bool):
    assert is_plural(name) is plural


def test_appearance_words_follow_pixel_contrast():
    image = np.full((64, 64, 3), 100, np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[20:40, 20:40] = True
    image[mask] = 200
    assert appearance(image, mask, "ct") == "hyperdense"
    assert appearance(image, mask, "ultrasound") == "hyperechoic"
    image[mask] = 10
    assert appearance(image, mask, "ct") == "hypodense"
    assert appearance(image, mask, "ultrasound") == "anechoic"
    image[mask] = (180, 30, 30)
    assert appearance(image, mask, "endoscopy").startswith("red")


def _lesion_scene(name: str, absent: tuple[str, ...] = ()) -> Scene:
    image = np.full((64, 64, 3), 120, np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[8:24, 40:60] = True  # upper right
    image[mask] = 30
    return Scene(image, "ultrasound", "breast", (SceneObject(name, mask, "finding"),), absent)


def test_official_grounding_comes_first_then_other_phrasings():
    scene = _lesion_scene("fetal head")
    paths = {"fetal head": "masks/h.png"}
    for seed in range(10):
        qas = make_questions(
            scene,
            paths,
            np.random.default_rng(seed),
            official_grounding=True,
            grounding_phrasings=3,
        )
        asked = [q.question for q in qas if q.task == "grounding"]
        assert (
            asked[0]
            == "<image>\nPlease generate a mask that segments the fetal head in this image."
        )
        assert len(asked) == 3 and len(set(asked)) == 3
        assert all(
            "<SEG><mask>masks/h.png</mask>" in q.answer for q in qas if q.task == "grounding"
        )
    one = make_questions(scene, paths, np.random.default_rng(0), official_grounding=True)
    assert [q.question for q in one if q.task == "grounding"] == [
        "<image>\n" + OFFICIAL_SEGMENT.format(x="fetal head")
    ]


def test_a_diagnosis_in_the_label_gives_a_benign_or_malignant_question_first():
    for name, absent, answer in (
        ("benign tumor", ("malignant tumor",), "Benign"),
        ("malignant tumor", ("benign tumor",), "Malignant"),
    ):
        presence = Counter()
        for seed in range(30):
            qas = make_questions(
                _lesion_scene(name, absent), {name: "m.png"}, np.random.default_rng(seed)
            )
            first = qas[0]
            assert (first.task, first.kind, first.answer, first.answer_type) == (
                "vqa",
                "diagnosis",
                answer,
                "closed",
            )
            assert "benign" in first.question and "malignant" in first.question  # both offered
            for qa in qas:
                if qa.kind == "presence":  # the other diagnosis is certainly absent
                    presence[qa.answer] += 1
                    assert qa.answer == ("Yes" if name in qa.question else "No")
        assert presence["Yes"] and presence["No"]
    plain = make_questions(
        _lesion_scene("tumor"), {"tumor": "m.png"}, np.random.default_rng(0), n_vqa=6
    )
    assert "diagnosis" not in {q.kind for q in plain}
