"""A mask's mirror agreement: stored with the answer, copied into forks, kept across migrations."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from alembic import command
from sqlalchemy import inspect, select, text

from serving.db import make_engine
from serving.execution import mirror_agreement_of, run_job
from serving.invariants import check_invariants
from serving.migrate import alembic_config
from serving.models import LinkRole, Mask, Role
from serving.services.reviews import rate_turn, review_statistics, verdict_signals
from serving.services.sessions import get_session
from serving.services.shares import create_share_link, fork_session
from tests.serving.test_corrections import _correct
from tests.serving.test_jobs import _setup
from tests.serving.test_shares_reviews import _user


@dataclass
class _OlderMask:
    """A mask type from before the mirror check: no such attribute at all."""

    mask: np.ndarray
    score: float | None = None


@dataclass
class _CheckedMask:
    mask: np.ndarray
    score: float | None
    mirror_agreement: float | None


@dataclass
class _Prediction:
    answer: str = "three masks"
    raw_answer: str = "<SEG> <SEG> <SEG>"
    masks: list[object] = field(default_factory=list)
    routing: None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class _Checked:
    """One checked mask, one whose check gave no number, one from an older predictor."""

    checkpoint_id = "mirror-checked"

    def set_image(self, image: np.ndarray) -> None:
        self.shape = image.shape[:2]

    def ask(self, question, regions=(), history=(), *, progress=None, on_text=None):
        left = np.zeros(self.shape, bool)
        left[:, : self.shape[1] // 2] = True
        return _Prediction(
            masks=[
                _CheckedMask(left, 0.8, np.float32(0.83)),
                _CheckedMask(~left, 0.6, float("nan")),
                _OlderMask(left, 0.7),
            ]
        )


def _answer(platform):
    actor, session_id = _setup(platform)
    view = platform.ask(actor=actor, session_id=session_id, question="segment it", regions=[])
    run_job(view.id, ctx=platform.ctx)
    return actor, session_id


def test_stored_as_given_none_where_there_is_no_number(database_url, make_platform):
    platform = make_platform(database_url, predictor=_Checked())
    actor, session_id = _answer(platform)
    (turn,) = platform.call(get_session, actor=actor, session_id=session_id).turns
    agreements = [m.mirror_agreement for m in turn.masks]
    assert agreements[0] is not None and abs(agreements[0] - 0.83) < 1e-6
    assert agreements[1:] == [None, None]
    assert [m.score for m in turn.masks] == [0.8, 0.6, 0.7]


def test_a_fork_keeps_each_masks_agreement(sqlite_url, make_platform):
    platform = make_platform(sqlite_url, predictor=_Checked())
    owner, session_id = _answer(platform)
    guest = _user(platform, "guest")
    _, token = platform.call(
        create_share_link, actor=owner, session_id=session_id, role=LinkRole.fork
    )
    fork = platform.call(fork_session, actor=guest, token=token)
    original = platform.call(get_session, actor=owner, session_id=session_id).turns[0]
    copy = platform.call(get_session, actor=guest, session_id=fork.id).turns[0]
    assert [m.mirror_agreement for m in copy.masks] == [m.mirror_agreement for m in original.masks]
    assert copy.masks[0].mirror_agreement is not None


def test_down_to_0007_and_back_keeps_every_mask_and_correction(database_url, make_platform):
    platform = make_platform(database_url, predictor=_Checked())
    owner, _ = _answer(platform)
    turn_id = platform.call(lambda db: db.scalars(select(Mask.turn_id)).first())
    corrected = np.zeros((30, 40), bool)
    corrected[2:9, 3:12] = True
    _correct(platform, owner, turn_id, corrected)
    engine = make_engine(database_url)

    def counts() -> list[int]:
        with engine.connect() as conn:
            return [
                conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                for t in ("masks", "mask_corrections")
            ]

    def columns() -> set[str]:
        return {c["name"] for c in inspect(engine).get_columns("masks")}

    assert counts() == [3, 1] and "mirror_agreement" in columns()
    cfg = alembic_config(database_url)
    command.downgrade(cfg, "0007")
    assert counts() == [3, 1] and "mirror_agreement" not in columns()
    command.upgrade(cfg, "head")
    assert counts() == [3, 1]
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT mirror_agreement FROM masks")).scalars().all()
    assert stored == [None, None, None]  # the number was dropped with the column, never guessed
    assert platform.call(lambda db: check_invariants(db, store=platform.store)) == []
    engine.dispose()


def test_reviewers_verdicts_are_set_against_the_models_own_numbers(sqlite_url, make_platform):
    platform = make_platform(sqlite_url, predictor=_Checked())
    owner, session_id = _answer(platform)
    (turn,) = platform.call(get_session, actor=owner, session_id=session_id).turns
    rita, ravi = _user(platform, "rita", Role.reviewer), _user(platform, "ravi", Role.reviewer)
    # Masks: 0 (score 0.8, agreement 0.83), 1 (0.6, none), 2 (0.7, none).
    for who, verdicts in ((rita, ["good", "wrong", "wrong"]), (ravi, ["partly", "wrong", "good"])):
        platform.call(
            rate_turn,
            actor=who,
            turn_id=turn.id,
            text_score=3,
            text_correct=None,
            mask_verdicts=verdicts,
        )
    rows = {row["verdict"]: row for row in platform.call(verdict_signals)}
    assert list(rows) == ["good", "partly", "wrong"]
    good, partly, wrong = rows["good"], rows["partly"], rows["wrong"]
    assert (good["masks_rated"], good["masks_checked"]) == (2, 1)  # mask 0 by rita, 2 by ravi
    assert good["mean_score"] == pytest.approx(0.75)
    assert good["mean_mirror_agreement"] == pytest.approx(0.83)
    assert (partly["masks_rated"], partly["masks_checked"]) == (1, 1)
    assert partly["mean_mirror_agreement"] == pytest.approx(0.83)
    assert (wrong["masks_rated"], wrong["masks_checked"]) == (3, 0)
    assert wrong["mean_score"] == pytest.approx((0.6 + 0.7 + 0.6) / 3)
    assert wrong["mean_mirror_agreement"] is None  # no wrong mask had a mirror check
    assert platform.call(review_statistics, actor=rita).signals == list(rows.values())


def test_with_no_ratings_every_verdict_has_nothing_to_average(sqlite_url, make_platform):
    platform = make_platform(sqlite_url, predictor=_Checked())
    _answer(platform)
    assert platform.call(verdict_signals) == [
        {
            "verdict": v,
            "masks_rated": 0,
            "mean_score": None,
            "masks_checked": 0,
            "mean_mirror_agreement": None,
        }
        for v in ("good", "partly", "wrong")
    ]


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (0.0, 0.0),
        (1, 1.0),
        (np.float32(0.5), 0.5),
        (None, None),
        (float("nan"), None),
        (float("inf"), None),
        (-0.1, None),
        (1.01, None),
        ("high", None),
        ([0.5], None),
    ],
)
def test_only_a_dice_is_stored(given, stored):
    assert mirror_agreement_of(_CheckedMask(np.ones((2, 2), bool), 0.5, given)) == stored


def test_a_mask_type_without_the_attribute_stores_none():
    assert mirror_agreement_of(_OlderMask(np.ones((2, 2), bool), 0.5)) is None
