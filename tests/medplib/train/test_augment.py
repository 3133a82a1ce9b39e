"""`augment`: training images changed so that every answer stays true."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from train_helpers import stage_dict

from medplib.checkpoint import load_pretrained
from medplib.data.mecovqa import LoadedSample, LoadedTurn, Sample, Turn
from medplib.errors import UserInputError
from medplib.train import config_from_dict
from medplib.train.augment import (
    adjust_intensity,
    augment_record,
    invert,
    is_greyscale,
    mirror,
    names_a_side,
    zoom_out,
)
from medplib.train.config import AugmentSection
from medplib.train.data import BatchStream, RecordOrder, StreamSpec, load_task_datasets


def _record(question: str, answer: str, source: str = "busi-mini") -> LoadedSample:
    """A 40 × 60 grey image with a bright 10 × 8 block left of centre; the block is the target
    mask and a 4 × 4 corner square is a region prompt."""
    image = np.full((40, 60, 3), 30, dtype=np.uint8)
    image[12:22, 10:18] = 220
    target = np.zeros((40, 60), dtype=bool)
    target[12:22, 10:18] = True
    region = np.zeros((40, 60), dtype=bool)
    region[:4, :4] = True
    sample = Sample(
        id="r0",
        image_path="images/r0.png",
        turns=(Turn(question=question, answer=answer),),
        task="grounding",
        modality="ultrasound",
        source=source,
        answer_type="open",
    )
    turn = LoadedTurn(question, answer, (region,), (target,))
    return LoadedSample(sample=sample, image=image, turns=(turn,))


SEGMENT = ("<image>\nPlease segment the tumor.", "The tumor: <SEG>.")
SIDE = ("<image>\nIs the tumor on the left or right side?", "It is on the left side.")


def _mask_pixels_are_bright(record: LoadedSample) -> bool:
    target = record.turns[0].target_masks[0]
    return bool(record.image[target].min() > 150 and record.image[~target].max() < 150)


def test_intensity_changes_keep_pixels_in_place():
    image = np.array([[[0, 0, 0], [64, 64, 64], [255, 255, 255]]], dtype=np.uint8)
    np.testing.assert_array_equal(adjust_intensity(image, 1.0, 1.0), image)
    darker = adjust_intensity(image, 2.0, 1.0)
    assert darker[0, 1, 0] == 16 and darker[0, 0, 0] == 0 and darker[0, 2, 0] == 255
    flat = adjust_intensity(image, 1.0, 0.0)  # no contrast left: every pixel at the mean
    assert len(np.unique(flat)) == 1 and flat[0, 0, 0] == round((0 + 64 + 255) / 3)
    np.testing.assert_array_equal(invert(invert(image)), image)
    assert invert(image)[0, 2, 0] == 0
    colour = image.copy()
    colour[0, 1] = (200, 40, 40)
    assert is_greyscale(image) and not is_greyscale(colour)


def test_mirror_moves_image_and_masks_together():
    record = _record(*SEGMENT)
    flipped = mirror(record)
    assert _mask_pixels_are_bright(flipped)
    ys, xs = np.nonzero(flipped.turns[0].target_masks[0])
    assert xs.min() == 60 - 18 and xs.max() == 60 - 11  # columns 10..17 → 42..49
    region = flipped.turns[0].region_masks[0]
    assert region[:4, -4:].all() and region.sum() == 16
    np.testing.assert_array_equal(mirror(flipped).image, record.image)


def test_zoom_out_shrinks_about_the_centre_and_keeps_sides():
    record = _record(*SEGMENT)
    small = zoom_out(record, 0.5)
    assert small.image.shape == record.image.shape
    target = small.turns[0].target_masks[0]
    assert target.sum() == 20  # 10 × 8 block at half size: 5 × 4
    assert _mask_pixels_are_bright(small)
    ys, xs = np.nonzero(target)
    assert xs.max() < 30  # still left of centre
    assert (small.image[0] == 30).all() and (small.image[:, -1] == 30).all()  # edge colour
    np.testing.assert_array_equal(zoom_out(record, 1.0).image, record.image)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        zoom_out(record, 0.0)


def test_records_that_name_a_side_are_never_mirrored():
    settings = AugmentSection(probability=1.0, hflip=1.0)
    assert names_a_side(_record(*SIDE)) and not names_a_side(_record(*SEGMENT))
    assert not names_a_side(_record("<image>\nWhat is the brightest structure?", "Bright."))
    for seed in range(20):
        rng = np.random.default_rng(seed)
        kept = augment_record(_record(*SIDE), settings, rng)
        np.testing.assert_array_equal(kept.image, _record(*SIDE).image)
        mirrored = augment_record(_record(*SEGMENT), settings, np.random.default_rng(seed))
        assert mirrored.turns[0].target_masks[0][:, 42:50].all(axis=1).sum() == 10


def test_probability_sources_and_seed_decide_what_changes():
    record = _record(*SEGMENT)
    off = AugmentSection()
    assert augment_record(record, off, np.random.default_rng(0)) is record
    every = AugmentSection(probability=1.0, gamma=2.0, contrast=0.5, sources=["busi-mini"])
    other = _record(*SEGMENT, source="synthetic")
    assert augment_record(other, every, np.random.default_rng(0)) is other
    a = augment_record(record, every, np.random.default_rng(7))
    b = augment_record(record, every, np.random.default_rng(7))
    c = augment_record(record, every, np.random.default_rng(8))
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.image, record.image) and not np.array_equal(a.image, c.image)
    assert a.turns == record.turns  # intensity alone: masks and text untouched
    half = AugmentSection(probability=0.5, gamma=2.0)
    changed = sum(
        not np.array_equal(
            augment_record(record, half, np.random.default_rng(s)).image, record.image
        )
        for s in range(200)
    )
    assert 70 < changed < 130


def test_inversion_only_touches_greyscale_images():
    settings = AugmentSection(probability=1.0, invert_grey=1.0)
    grey = _record(*SEGMENT)
    inverted = augment_record(grey, settings, np.random.default_rng(0))
    np.testing.assert_array_equal(inverted.image, 255 - grey.image)
    colour = dataclasses.replace(grey, image=grey.image.copy())
    colour.image[..., 0] = 90
    assert augment_record(colour, settings, np.random.default_rng(0)) is colour


def test_config_validates_augment_and_keeps_old_fingerprints():
    plain = config_from_dict(stage_dict("moe"))
    explicit_off = config_from_dict({**stage_dict("moe"), "augment": {"gamma": 1.5}})
    assert plain.fingerprint() == explicit_off.fingerprint()
    on = config_from_dict({**stage_dict("moe"), "augment": {"probability": 0.5, "gamma": 1.5}})
    assert on.fingerprint() != plain.fingerprint() and on.augment.gamma == 1.5
    bad = [
        ({"probability": 1.5}, "chances in"),
        ({"gamma": 0.5}, "gamma must be 1 or more"),
        ({"zoom_out": 1.0}, "zoom_out in"),
        ({"sources": []}, "must name some sources"),
        ({"flip": 0.5}, "unknown key augment.flip"),
    ]
    for section, message in bad:
        with pytest.raises(UserInputError, match=message):
            config_from_dict({**stage_dict("moe"), "augment": section})
    # `augment:` left empty in YAML is null: a clear message, not a crash later on.
    for key in ("augment", "patch_labels"):
        with pytest.raises(UserInputError, match=f"{key} must be a mapping"):
            config_from_dict({**stage_dict("moe"), key: None})
    assert config_from_dict({**stage_dict("moe"), "lora": None}).lora is None  # optional
    with_labels = {**stage_dict("vl"), "patch_labels": {"weight": 1.0}}
    with pytest.raises(UserInputError, match="move structures"):
        config_from_dict({**with_labels, "augment": {"probability": 0.5, "hflip": 0.5}})
    # Intensity changes move nothing, so they go with patch labels.
    config_from_dict({**with_labels, "augment": {"probability": 0.5, "gamma": 1.5}})


def test_batch_stream_changes_training_images_the_same_way_every_time(
    corpus: Path, stages: dict[str, Path]
):
    _, tokenizer, config = load_pretrained(stages["export"], device="cpu")
    sets = load_task_datasets(corpus, ["grounding"], "train", max_records=8)
    order = RecordOrder({"grounding": 8}, {"grounding": 1.0}, seed=3)

    def stream(augment: AugmentSection | None) -> BatchStream:
        spec = StreamSpec(sets, order, batch_size=4)
        return BatchStream(spec, tokenizer, config, num_micro_batches=2, augment=augment)

    settings = AugmentSection(probability=1.0, gamma=2.0, zoom_out=0.4, hflip=1.0)
    plain, changed, again = stream(None), stream(settings), stream(settings)
    for k in range(2):
        before, after = plain.lm_loaded(k), changed.lm_loaded(k)
        assert [r.sample.id for r in before] == [r.sample.id for r in after]
        assert all(not np.array_equal(a.image, b.image) for a, b in zip(before, after, strict=True))
        for a, b in zip(after, again.lm_loaded(k), strict=True):  # a resumed run sees the same
            np.testing.assert_array_equal(a.image, b.image)
        masks_before = sum(m.sum() for r in before for m in r.target_masks)
        masks_after = sum(m.sum() for r in after for m in r.target_masks)
        assert 0 < masks_after <= masks_before  # zoomed out, never grown
        batch = changed[k]["lm"]  # what the model trains on is the changed record
        assert sum(float(m.sum()) for ms in batch.target_masks for m in ms) == masks_after
