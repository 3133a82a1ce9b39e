"""Synthetic scenes: every modality paints several named structures with exact, usable masks."""

from __future__ import annotations

import time

import numpy as np
import pytest

from medplib.data.synthetic import MODALITIES, VOCABULARY, generate_scene


def _scenes(modality: str, n: int, seed: int = 0, size: int = 128):
    return [generate_scene(modality, np.random.default_rng([seed, i]), size) for i in range(n)]


@pytest.mark.parametrize("modality", MODALITIES)
def test_each_scene_has_several_targets_of_usable_size(modality: str):
    min_area = round(0.004 * 128 * 128)
    for scene in _scenes(modality, 12):
        assert scene.image.shape == (128, 128, 3) and scene.image.dtype == np.uint8
        assert len(scene.objects) >= 2
        names = [o.name for o in scene.objects]
        assert len(set(names)) == len(names)
        for obj in scene.objects:
            assert obj.mask.shape == (128, 128) and obj.mask.dtype == bool
            assert obj.mask.sum() >= min_area, (modality, obj.name)
            assert obj.kind in ("anatomy", "finding")
        assert not set(names) & set(scene.absent)
        assert set(scene.absent) <= {n for v in VOCABULARY.values() for n in v}


@pytest.mark.parametrize("modality", MODALITIES)
def test_same_seed_same_scene_other_seed_other_scene(modality: str):
    a = generate_scene(modality, np.random.default_rng(7))
    b = generate_scene(modality, np.random.default_rng(7))
    c = generate_scene(modality, np.random.default_rng(8))
    assert np.array_equal(a.image, b.image)
    assert [(o.name, o.mask.tobytes()) for o in a.objects] == [
        (o.name, o.mask.tobytes()) for o in b.objects
    ]
    assert not np.array_equal(a.image, c.image)


def test_structures_inside_others_are_part_of_their_parent_mask():
    seen = 0
    for modality in MODALITIES:
        for scene in _scenes(modality, 20, seed=3):
            by_name = {o.name: o for o in scene.objects}
            for obj in scene.objects:
                if obj.parent in by_name:
                    seen += 1
                    assert not (obj.mask & ~by_name[obj.parent].mask).any(), (modality, obj.name)
    assert seen > 20


def test_radiological_left_right_convention():
    """Patient's right is on the image left in CT, MR, PET and chest X-ray."""
    checked = 0
    for modality in ("ct", "mr", "pet", "xray"):
        for scene in _scenes(modality, 20, seed=5):
            for obj in scene.objects:
                if obj.name.startswith(("right ", "left ")):
                    cx = np.nonzero(obj.mask)[1].mean() / 128
                    assert (cx < 0.5) == obj.name.startswith("right "), (modality, obj.name)
                    checked += 1
    assert checked > 40


def test_ct_densities_follow_their_order():
    """Bone brighter than contrast-filled aorta, brighter than kidney, brighter than liver,
    brighter than a hypodense tumour — measured on the rendered pixels."""
    means: dict[str, list[float]] = {}
    for scene in _scenes("ct", 40, seed=11):
        grey = scene.image[..., 0].astype(float)
        for obj in scene.objects:
            own = obj.mask.copy()
            for other in scene.objects:
                if other.parent == obj.name:
                    own &= ~other.mask
            means.setdefault(obj.name, []).append(grey[own].mean())
    m = {k: np.mean(v) for k, v in means.items()}
    assert m["spine"] > m["aorta"] > m["left kidney"] > m["liver"] > m["tumor"] > m["left lung"]


def _features(image: np.ndarray) -> np.ndarray:
    img = image.astype(float) / 255
    corners = np.concatenate([img[:12, :12], img[:12, -12:], img[-12:, :12], img[-12:, -12:]])
    return np.concatenate(
        [
            img.mean(axis=(0, 1)),
            img.std(axis=(0, 1)),
            corners.mean(axis=(0, 1, 2), keepdims=True).ravel(),
            [(img.max(axis=2) < 0.05).mean(), (img.max(axis=2) - img.min(axis=2)).mean()],
        ]
    )


def test_modalities_have_distinct_looks():
    """A nearest-centroid classifier on colour and background statistics tells them apart."""
    train = {m: np.stack([_features(s.image) for s in _scenes(m, 30, seed=1)]) for m in MODALITIES}
    centroids = np.stack([train[m].mean(axis=0) for m in MODALITIES])
    scale = np.concatenate(list(train.values())).std(axis=0) + 1e-6
    correct = total = 0
    for k, m in enumerate(MODALITIES):
        for scene in _scenes(m, 15, seed=2):
            d = (((_features(scene.image) - centroids) / scale) ** 2).sum(axis=1)
            correct += int(np.argmin(d) == k)
            total += 1
    assert correct / total > 0.9


def test_the_generator_is_fast_enough_for_thousands_of_images_a_minute():
    start = time.perf_counter()
    n = 0
    for modality in MODALITIES:
        n += len(_scenes(modality, 10, seed=9))
    per_image = (time.perf_counter() - start) / n
    assert per_image < 0.05  # < 50 ms on a shared core; ~10 ms when idle


def test_unknown_modality_is_refused():
    with pytest.raises(ValueError, match="unknown modality 'oct'"):
        generate_scene("oct", np.random.default_rng(0))
