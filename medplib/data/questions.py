"""Question/answer pairs of the three MeCoVQA kinds, built from what a scene's masks show.

- complex VQA: modality, presence (yes/no), side and height in the image, relative size, and an
  overall interpretation;
- region VQA: a ``<region>mask</region>`` to name, describe or verify;
- grounding: "segment the X", answered by naming X right before ``<SEG>`` — a model trained on
  bare ``<SEG>`` answers can learn to ignore which structure was asked for.

Every fact in an answer is measured from the masks and pixels (centroids, areas, brightness
against a ring around the structure), so answers never contradict the image.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from medplib.conversation import OFFICIAL_SEGMENT
from medplib.data.shapes import dilate
from medplib.data.synthetic import Scene, SceneObject

MODALITY_ANSWER = {
    "ct": "CT",
    "mr": "MRI",
    "pet": "PET",
    "xray": "X-ray",
    "ultrasound": "Ultrasound",
    "endoscopy": "Endoscopy",
    "fundus": "Fundus photography",
    "dermoscopy": "Dermoscopy",
    "pathology": "Pathology",
    "microscopy": "Microscopy",
    "oct": "OCT",
}
MODALITY_PHRASE = {
    "ct": "CT scan",
    "mr": "MRI scan",
    "pet": "PET scan",
    "xray": "X-ray",
    "ultrasound": "ultrasound image",
    "endoscopy": "endoscopy image",
    "fundus": "fundus photograph",
    "dermoscopy": "dermoscopy image",
    "pathology": "pathology slide",
    "microscopy": "microscopy image",
    "oct": "OCT scan",
}
# How each grey-scale modality names "brighter / darker / alike" than the surroundings.
_CONTRAST = {
    "ct": ("hyperdense", "hypodense", "isodense"),
    "mr": ("hyperintense", "hypointense", "isointense"),
    "pet": ("hypermetabolic, with increased uptake", "low in uptake", "similar in uptake"),
    "xray": ("more radiopaque", "more radiolucent", "similar in density"),
    "ultrasound": ("hyperechoic", "hypoechoic", "isoechoic"),
    "oct": ("hyperreflective", "hyporeflective", "similar in reflectivity"),
}
_PLURAL = {"nuclei", "vessels", "exudates", "ventricles", "dark globules", "lungs", "cells"}

MODALITY_QUESTIONS = (
    "What imaging modality is this?",
    "Which imaging modality was used to acquire this image?",
    "What kind of medical image is this?",
    "Identify the imaging modality of this image.",
)
DESCRIBE_IMAGE = (
    "What can you interpret from the overall image?",
    "Please provide an interpretation from this image.",
    "Can you provide an interpretation of the overall findings from this image?",
    "What can you infer from the overall situation in this image?",
    "Describe this image.",
)
NAME_REGION = (
    "What is in region {r}?",
    "What structure is shown in the area {r}?",
    "Can you identify the region {r}?",
    "Which organ or finding does the area {r} correspond to?",
)
DESCRIBE_REGION = (
    "Describe the area {r}.",
    "Can you describe what is seen at the area {r}?",
    "Can you describe the visual features of the area {r}?",
    "What does the region {r} look like?",
)
SEGMENT = (
    "Please segment the {x}.",
    "Could you segment out the {x} in this image?",
    OFFICIAL_SEGMENT,
    "Can you segment the {x}?",
    "Where is the {x}? Please output its mask.",
    "Segment the {x} in this {m}.",
)
# Benign vs malignant, where the label states the biopsy result ("benign tumor").
DIAGNOSES = ("benign", "malignant")
DIAGNOSIS_QUESTIONS = (
    "Is the {x} in this image benign or malignant?",
    "Is this {x} benign or malignant?",
    "Does this image show a benign or a malignant {x}?",
    "What is the pathology of the {x}: benign or malignant?",
)
SEGMENT_ANSWER = (
    "The {x}: <SEG>.",
    "{It} {be} the {x} <SEG>.",
    "Sure, the {x} {be} <SEG>.",
    "Here {be} the {x}: <SEG>.",
)


@dataclass(frozen=True)
class QA:
    task: str  # "vqa", "region" or "grounding"
    kind: str  # which template family, e.g. "presence", "describe-region"
    question: str  # begins with "<image>\n"
    answer: str
    answer_type: str  # "closed" (fixed answer set) or "open"


def is_plural(name: str) -> bool:
    last = name.split()[-1]
    return (
        name in _PLURAL
        or last in _PLURAL
        or (last.endswith("s") and not last.endswith(("ss", "us", "is", "as")))
    )


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _be(name: str) -> str:
    return "are" if is_plural(name) else "is"


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    """(y, x) of the mask's centre of mass, as fractions of the image height and width."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return (ys.mean() + 0.5) / h, (xs.mean() + 0.5) / w


def clear_side(mask: np.ndarray, axis: int) -> str | None:
    """ "left"/"right" (axis 1) or "upper"/"lower" (axis 0) if ≥ 90 % of the mask is on that side
    and its centre is off the midline; else None."""
    coords = np.nonzero(mask)[axis]
    half = mask.shape[axis] / 2
    first = float((coords < half).mean())
    centre = (coords.mean() + 0.5) / mask.shape[axis]
    if abs(centre - 0.5) < 0.08:
        return None
    names = ("left", "right") if axis == 1 else ("upper", "lower")
    if first >= 0.9:
        return names[0]
    if first <= 0.1:
        return names[1]
    return None


def position_phrase(mask: np.ndarray) -> str:
    cy, cx = _centroid(mask)
    v = "upper" if cy < 0.4 else ("lower" if cy > 0.6 else None)
    h = "left" if cx < 0.4 else ("right" if cx > 0.6 else None)
    if v and h:
        return f"in the {v} {h} part of the image"
    if h:
        return f"on the {h} side of the image"
    if v:
        return f"in the {v} part of the image"
    return "in the centre of the image"


def size_word(mask: np.ndarray) -> str:
    fraction = mask.mean()
    return "small" if fraction < 0.02 else ("medium-sized" if fraction < 0.1 else "large")


def _colour_name(rgb: np.ndarray) -> str:
    h, s, v = colorsys.rgb_to_hsv(*(float(c) / 255 for c in rgb))
    if v < 0.18:
        return "dark"
    if s < 0.18:
        return "whitish" if v > 0.75 else "greyish"
    if h < 0.03 or h > 0.94:
        return "red" if v > 0.45 else "dark red"
    if h < 0.11:
        return "brown" if v < 0.6 else ("orange" if s > 0.6 else "pink")
    if h < 0.19:
        return "yellow"
    if h < 0.45:
        return "green"
    if h < 0.72:
        return "bluish"
    return "purple"


def appearance(image: np.ndarray, mask: np.ndarray, modality: str) -> str:
    """How the structure looks against a ring of pixels around it, in the modality's words."""
    ring = dilate(mask, max(2, round(0.03 * max(mask.shape)))) & ~mask
    inside = image[mask].astype(np.float32)  # (N, 3)
    around = image[ring].astype(np.float32) if ring.any() else inside
    diff = float(inside.mean() - around.mean())
    if modality in _CONTRAST:
        bright, dark, alike = _CONTRAST[modality]
        if modality == "ultrasound" and inside.mean() < 25:
            return "anechoic"
        return bright if diff > 12 else (dark if diff < -12 else alike)
    colour = _colour_name(inside.mean(axis=0))
    relative = "brighter than" if diff > 12 else ("darker than" if diff < -12 else "similar to")
    return f"{colour}, {relative} the surroundings"


def _with_tag(path: str, tag: str) -> str:
    return f"<{tag}>{path}</{tag}>"


def _vqa(kind: str, question: str, answer: str, answer_type: str) -> QA:
    return QA("vqa", kind, f"<image>\n{question}", answer, answer_type)


def _presence(scene: Scene, rng: np.random.Generator) -> QA | None:
    options = [("Yes", o.name) for o in scene.objects] + [("No", n) for n in scene.absent]
    yes = [o for o in options if o[0] == "Yes"]
    no = [o for o in options if o[0] == "No"]
    pool = no if no and (not yes or rng.random() < 0.5) else yes
    if not pool:
        return None
    answer, name = pool[int(rng.integers(len(pool)))]
    if is_plural(name):
        q = _pick(
            rng,
            (
                f"Are there {name} in this image?",
                f"Are the {name} visible in this image?",
                f"Can you see {name} in this image?",
                f"Does this image show {name}?",
            ),
        )
    else:
        a = "an" if name[0] in "aeiou" else "a"
        q = _pick(
            rng,
            (
                f"Is there {a} {name} in this image?",
                f"Is the {name} visible in this image?",
                f"Can you see {a} {name} in this image?",
                f"Does this image show {a} {name}?",
            ),
        )
    return _vqa("presence", q, answer, "closed")


def _side(scene: Scene, rng: np.random.Generator, axis: int) -> QA | None:
    candidates = [(o, clear_side(o.mask, axis)) for o in scene.objects]
    candidates = [(o, side) for o, side in candidates if side]
    if not candidates:
        return None
    obj, side = candidates[int(rng.integers(len(candidates)))]
    be = _be(obj.name)
    if axis == 1:
        q = _pick(
            rng,
            (
                "Is the {x} on the left or right side of the image?",
                f"On which side of the image {be} the {{x}}, left or right?",
                f"{_cap(be)} the {{x}} in the left or the right half of the image?",
            ),
        )
        kind = "side"
    else:
        q = _pick(
            rng,
            (
                "Is the {x} in the upper or lower part of the image?",
                f"{_cap(be)} the {{x}} in the upper or the lower half of the image?",
            ),
        )
        kind = "height"
    return _vqa(kind, q.format(x=obj.name), _cap(side or ""), "closed")


def _larger(scene: Scene, rng: np.random.Generator) -> QA | None:
    objs = scene.objects
    area = {o.name: int(o.mask.sum()) for o in objs}
    pairs = [
        (a, b)
        for i, a in enumerate(objs)
        for b in objs[i + 1 :]
        if a.parent != b.name
        and b.parent != a.name  # nested pairs are trivial
        and max(area[a.name], area[b.name]) >= 1.5 * min(area[a.name], area[b.name])
    ]
    if not pairs:
        return None
    a, b = pairs[int(rng.integers(len(pairs)))]
    if rng.random() < 0.5:
        a, b = b, a
    smaller = rng.random() < 0.3
    pick = min if smaller else max
    winner = pick((a, b), key=lambda o: area[o.name])
    word = "smaller" if smaller else "larger"
    q = _pick(
        rng,
        (
            f"Which is {word}, the {a.name} or the {b.name}?",
            f"Which structure appears {word} in this image: the {a.name} or the {b.name}?",
        ),
    )
    return _vqa("size", q, f"The {winner.name}", "closed")


def _listing(names: Sequence[str]) -> str:
    named = [f"the {n}" for n in names]
    return named[0] if len(named) == 1 else ", ".join(named[:-1]) + f" and {named[-1]}"


def describe_scene(scene: Scene, exhaustive: bool) -> str:
    phrase = MODALITY_PHRASE.get(scene.modality, f"{scene.modality} image")
    site = f" of the {scene.site}" if scene.site else ""
    a = "an" if phrase[0] in "aeiouAEIOU" else "a"
    parts = [f"This is {a} {phrase}{site}."]
    anatomy = [o.name for o in scene.objects if o.kind == "anatomy"]
    if anatomy:
        parts.append(f"Visible structures include {_listing(anatomy)}.")
    findings = [o for o in scene.objects if o.kind == "finding"]
    for f in findings:
        where = f" in the {f.parent}" if f.parent else ""
        be = "are" if is_plural(f.name) else "is"
        article = "" if is_plural(f.name) else ("an " if f.name[0] in "aeiou" else "a ")
        parts.append(
            f"{_cap(article + f.name)} {be} seen{where}, {position_phrase(f.mask)}, "
            f"appearing {appearance(scene.image, f.mask, scene.modality)}."
        )
    if not findings and exhaustive:
        parts.append("No abnormal finding is visible.")
    return " ".join(parts)


def describe_region(scene: Scene, obj: SceneObject) -> str:
    what = "finding" if obj.kind == "finding" else "structure"
    be = _be(obj.name)
    text = (
        f"This area shows the {obj.name}, a {size_word(obj.mask)} {what} "
        f"{position_phrase(obj.mask)}."
    )
    if obj.parent:
        text += f" It lies within the {obj.parent}."
    phrase = MODALITY_PHRASE.get(scene.modality, "image")
    look = appearance(scene.image, obj.mask, scene.modality)
    return text + f" On this {phrase} the {obj.name} {be} {look}."


def _region(scene: Scene, obj: SceneObject, path: str, rng: np.random.Generator) -> QA:
    r = _with_tag(path, "region")
    roll = rng.random()
    if roll < 0.4:
        q, a, kind, at = _pick(rng, NAME_REGION), f"The {obj.name}.", "name-region", "open"
    elif roll < 0.75:
        q, a, kind, at = (
            _pick(rng, DESCRIBE_REGION),
            describe_region(scene, obj),
            "describe-region",
            "open",
        )
    else:
        others = [o.name for o in scene.objects if o.name != obj.name] + list(scene.absent)
        asked = obj.name if not others or rng.random() < 0.5 else _pick(rng, others)
        q = _pick(
            rng, (f"Is the region {{r}} the {asked}?", f"Does the area {{r}} show the {asked}?")
        )
        a, kind, at = ("Yes" if asked == obj.name else "No"), "verify-region", "closed"
    return QA("region", kind, f"<image>\n{q.format(r=r)}", a, at)


def _diagnosis(scene: Scene, rng: np.random.Generator) -> QA | None:
    """ "Is the tumor benign or malignant?" for a structure named "<diagnosis> <noun>"."""
    for obj in scene.objects:
        first, _, noun = obj.name.partition(" ")
        if first in DIAGNOSES and noun:
            q = _pick(rng, DIAGNOSIS_QUESTIONS).format(x=noun)
            return _vqa("diagnosis", q, _cap(first), "closed")
    return None


def grounding_templates(
    rng: np.random.Generator, count: int, official_first: bool
) -> list[str | None]:
    """Question templates for one structure's grounding records.

    Not `official_first`: one None, meaning "pick at random" (the original draw order, so
    synthetic corpora keep their bytes). Otherwise the official MeCoVQA-G question first,
    then `count` - 1 other templates, all different.
    """
    if not official_first:
        return [None]
    others = [t for t in SEGMENT if t != OFFICIAL_SEGMENT]
    extra = rng.permutation(len(others))[: max(0, count - 1)]
    return [OFFICIAL_SEGMENT, *(others[int(k)] for k in extra)]


def _grounding(
    scene: Scene,
    obj: SceneObject,
    path: str,
    rng: np.random.Generator,
    template: str | None = None,
) -> QA:
    m = MODALITY_PHRASE.get(scene.modality, "image")
    q = (template or _pick(rng, SEGMENT)).format(x=obj.name, m=m)
    plural = is_plural(obj.name)
    answer = _pick(rng, SEGMENT_ANSWER).format(
        x=obj.name, be=_be(obj.name), It="They" if plural else "It"
    )
    answer = answer.replace("<SEG>", "<SEG>" + _with_tag(path, "mask"))
    return QA("grounding", "segment", f"<image>\n{q}", answer, "open")


def make_questions(
    scene: Scene,
    mask_paths: dict[str, str],
    rng: np.random.Generator,
    *,
    n_vqa: int = 3,
    n_region: int = 2,
    max_grounding: int = 4,
    exhaustive: bool = True,
    official_grounding: bool = False,
    grounding_phrasings: int = 1,
) -> list[QA]:
    """Question/answer pairs for one scene.

    `mask_paths` maps each object name to its mask path relative to the corpus root.
    `exhaustive` says the scene names every finding it has, so "no abnormal finding" is true.
    `official_grounding`: each structure's first grounding question is the official MeCoVQA-G
    one, followed by `grounding_phrasings` - 1 other phrasings (else one random phrasing).
    A structure named with its diagnosis ("malignant tumor") gets a benign-or-malignant
    question first among the VQA records.
    """
    makers: dict[str, Callable[[], QA | None]] = {
        "modality": lambda: _vqa(
            "modality",
            _pick(rng, MODALITY_QUESTIONS),
            MODALITY_ANSWER.get(scene.modality, scene.modality),
            "closed",
        ),
        "presence": lambda: _presence(scene, rng),
        "side": lambda: _side(scene, rng, 1),
        "height": lambda: _side(scene, rng, 0),
        "size": lambda: _larger(scene, rng),
        "describe": lambda: _vqa(
            "describe", _pick(rng, DESCRIBE_IMAGE), describe_scene(scene, exhaustive), "open"
        ),
    }
    out: list[QA] = []
    order = [str(k) for k in rng.permutation(list(makers))]
    if any(o.name.split(" ", 1)[0] in DIAGNOSES for o in scene.objects):
        # Only for such scenes: other scenes keep their draws, and so their bytes.
        makers["diagnosis"] = lambda: _diagnosis(scene, rng)
        order.insert(0, "diagnosis")  # the question a clinician asks of such an image
    for kind in order:
        if len([q for q in out if q.task == "vqa"]) >= n_vqa:
            break
        qa = makers[kind]()
        if qa is not None:
            out.append(qa)
    objects = [o for o in scene.objects if o.name in mask_paths]
    for k in rng.permutation(len(objects))[:n_region]:
        obj = objects[int(k)]
        out.append(_region(scene, obj, mask_paths[obj.name], rng))
    for k in rng.permutation(len(objects))[:max_grounding]:
        obj = objects[int(k)]
        for template in grounding_templates(rng, grounding_phrasings, official_grounding):
            out.append(_grounding(scene, obj, mask_paths[obj.name], rng, template))
    return out
