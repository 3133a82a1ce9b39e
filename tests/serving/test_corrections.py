"""Corrected masks: versions kept, permissions, bad input, and reviewers' agreement."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from medplib.masks import decode_rle, encode_rle
from serving.models import LinkRole, MaskCorrection, Role
from serving.services.corrections import (
    correct_mask,
    correction_agreement,
    mask_index_of,
    mask_versions,
)
from serving.services.errors import InvalidInput, NotFound
from serving.services.reviews import review_statistics
from serving.services.sessions import get_session
from serving.services.shares import create_share_link, fork_session
from tests.serving.test_shares_reviews import _answered_session, _user

HW = (30, 40)  # the test image: png_bytes() is 40 wide, 30 high


def box(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros(HW, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _setup(platform):
    owner = _user(platform, "owner")
    r1, r2 = _user(platform, "rev1", Role.reviewer), _user(platform, "rev2", Role.reviewer)
    session_id = _answered_session(platform, owner)  # one mask: the box (1, 1, 10, 10)
    turn = platform.call(get_session, actor=owner, session_id=session_id).turns[0]
    return owner, r1, r2, session_id, turn


def _correct(platform, actor, turn_id, mask, index=0):
    return platform.call(
        correct_mask,
        actor=actor,
        store=platform.store,
        turn_id=turn_id,
        mask_index=index,
        mask_rle=encode_rle(mask),
    )


def test_corrections_are_new_versions_and_the_model_mask_stays(database_url, make_platform):
    platform = make_platform(database_url)
    owner, r1, r2, _, turn = _setup(platform)
    original = turn.masks[0].rle
    a, b, c = box(0, 0, 10, 10), box(5, 0, 15, 10), box(2, 2, 12, 12)
    first = _correct(platform, r1, turn.id, a)
    assert (first.version, first.author, first.area_px) == (1, "rev1", 100)
    assert first.bbox_xyxy_px == [0, 0, 10, 10]
    _correct(platform, r2, turn.id, b)
    _correct(platform, owner, turn.id, c)  # the session's owner may correct too
    versions = platform.call(mask_versions, actor=r1, turn_id=turn.id, mask_index=0)
    assert [(v.version, v.author) for v in versions] == [
        (0, "model"),
        (1, "rev1"),
        (2, "rev2"),
        (3, "owner"),
    ]
    assert versions[0].rle == original and decode_rle(versions[0].rle)[1:10, 1:10].all()
    for v, m in zip(versions[1:], (a, b, c), strict=True):
        assert np.array_equal(decode_rle(v.rle), m)
    assert platform.store.exists(
        platform.call(lambda db: db.scalars(select(MaskCorrection.png_key)).first())
    )
    # The session's answer still shows the model's mask.
    again = platform.call(get_session, actor=owner, session_id=turn.session_id).turns[0]
    assert again.masks[0].rle == original


def test_reviewers_corrections_agree_by_dice_and_iou(database_url, make_platform):
    platform = make_platform(database_url)
    owner, r1, r2, _, turn = _setup(platform)
    _correct(platform, r1, turn.id, box(0, 0, 20, 10))  # replaced by r1's next version
    _correct(platform, r1, turn.id, box(0, 0, 10, 10))  # 100 px
    _correct(platform, r2, turn.id, box(5, 0, 15, 10))  # 100 px, 50 shared
    _correct(platform, owner, turn.id, box(0, 0, 40, 30))  # not a reviewer: not in agreement
    report = platform.call(correction_agreement)
    assert report["corrected_masks"] == 1
    (row,) = report["rows"]
    assert row["names"] == ["rev1", "rev2"]
    assert row["dice"] == pytest.approx(2 * 50 / 200) and row["iou"] == pytest.approx(50 / 150)
    (pair,) = report["by_pair"]
    assert pair["names"] == ["rev1", "rev2"] and pair["items"] == 1
    assert report["overall"]["dice"] == pytest.approx(0.5)
    stats = platform.call(review_statistics, actor=r1)
    assert stats.masks == report


def test_a_reviewer_correcting_a_copy_corrects_the_answer_it_came_from(sqlite_url, make_platform):
    platform = make_platform(sqlite_url)
    owner, r1, _, session_id, turn = _setup(platform)
    guest = _user(platform, "guest")
    _, token = platform.call(
        create_share_link, actor=owner, session_id=session_id, role=LinkRole.fork
    )
    fork = platform.call(fork_session, actor=guest, token=token)
    copy = platform.call(get_session, actor=guest, session_id=fork.id).turns[0]
    saved = _correct(platform, r1, copy.id, box(0, 0, 10, 10))
    assert saved.mask_id == turn.masks[0].id
    # The fork's owner corrects their own copy, apart from the original.
    mine = _correct(platform, guest, copy.id, box(0, 0, 5, 5))
    assert mine.mask_id == copy.masks[0].id and mine.version == 1


def test_bad_corrections_get_a_clear_message_and_store_nothing(sqlite_url, make_platform):
    platform = make_platform(sqlite_url)
    owner, r1, _, _, turn = _setup(platform)
    stranger = _user(platform, "stranger")
    cases = [
        (r1, turn.id, 0, encode_rle(np.zeros(HW, dtype=bool)), InvalidInput, "empty"),
        (r1, turn.id, 0, encode_rle(np.ones((60, 80), dtype=bool)), InvalidInput, "60 × 80"),
        (r1, turn.id, 0, {"size": [30, 40], "counts": "!!"}, InvalidInput, "could not be read"),
        (r1, turn.id, 0, {"size": [30, 40], "counts": [5]}, InvalidInput, "could not be read"),
        (r1, turn.id, 0, "a mask", InvalidInput, "COCO RLE"),
        (r1, turn.id, 0, {"size": ["30", 40], "counts": []}, InvalidInput, "height, width"),
        (r1, turn.id, 3, encode_rle(box(0, 0, 4, 4)), InvalidInput, "no mask 4"),
        (r1, turn.id, True, encode_rle(box(0, 0, 4, 4)), InvalidInput, "which mask"),
        (r1, "x" * 32, 0, encode_rle(box(0, 0, 4, 4)), NotFound, "does not exist"),
        (r1, "../etc", 0, encode_rle(box(0, 0, 4, 4)), NotFound, "does not exist"),
        (stranger, turn.id, 0, encode_rle(box(0, 0, 4, 4)), NotFound, "does not exist"),
    ]
    for actor, turn_id, index, rle, error, message in cases:
        with pytest.raises(error, match=message):
            platform.call(
                correct_mask,
                actor=actor,
                store=platform.store,
                turn_id=turn_id,
                mask_index=index,
                mask_rle=rle,
            )
    count = platform.call(lambda db: db.scalar(select(func.count()).select_from(MaskCorrection)))
    assert count == 0
    with pytest.raises(NotFound):
        platform.call(mask_versions, actor=stranger, turn_id=turn.id, mask_index=0)


@pytest.mark.parametrize(
    ("number", "index", "message"),
    [
        (1, 0, None),
        (3.0, 2, None),  # a number field's 3.0 is mask 3
        (None, None, "Choose which mask to correct"),
        (0, None, "mask number must be at least 1"),
        (2.5, None, "mask number must be a whole number"),
        (float("nan"), None, "not NaN"),
        ("two", None, "mask number must be a number"),
    ],
)
def test_mask_numbers_from_clients_become_indexes_or_one_sentence(number, index, message):
    if message is None:
        assert mask_index_of(number) == index
    else:
        with pytest.raises(InvalidInput, match=message):
            mask_index_of(number)
