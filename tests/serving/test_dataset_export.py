"""Exporting reviewed answers as a MeCoVQA corpus: selection, files, data card, refusals."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import update

from medplib.cli import main
from medplib.data.files import load_mask
from medplib.data.mecovqa import read_mecovqa
from medplib.geometry import BoxPrompt, prompt_to_mask
from medplib.masks import encode_rle
from serving.execution import run_job
from serving.models import LinkKind, LinkRole, MaskCorrection, Rating, Role, Turn, User
from serving.predictors import NoopPrediction, NoopPredictor
from serving.services.corrections import correct_mask
from serving.services.dataset_export import export_dataset
from serving.services.errors import Forbidden, InvalidInput, NotFound
from serving.services.images import ingest_image
from serving.services.reviews import rate_turn
from serving.services.sessions import create_session, get_session
from serving.services.shares import create_share_link, fork_session
from tests.serving.conftest import png_bytes
from tests.serving.test_shares_reviews import _user

HW = (30, 40)  # png_bytes(): 40 wide, 30 high


def box(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros(HW, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


MODEL_MASK = box(20, 5, 35, 25)


class ScriptedPredictor(NoopPredictor):
    """A mask for "segment" questions (always the same box), a short text answer otherwise."""

    checkpoint_id = "scripted"

    def ask(self, question, regions=(), history=(), *, progress=None, on_text=None):
        if "segment" in question:
            mask = np.zeros(HW, dtype=bool) if "nothing" in question else MODEL_MASK
            return NoopPrediction(
                answer="It is the lesion.",
                raw_answer="It is the lesion <SEG>.",
                masks=[_Mask(mask)],
            )
        if question.startswith("Is"):
            return NoopPrediction(answer="Yes, it is.", raw_answer="Yes, it is.")
        return NoopPrediction(answer="The liver.", raw_answer="The liver.")


@dataclass
class _Mask:
    mask: np.ndarray
    score: float = 0.9


def _session(platform, owner, seed: int) -> str:
    def body(db):
        image = ingest_image(
            db, store=platform.store, settings=platform.settings, data=png_bytes(seed=seed)
        )
        return create_session(db, actor=owner, image_id=image.id, title="case").id

    return platform.call(body)


def _ask(platform, actor, session_id, question, regions=None) -> str:
    view = platform.ask(
        actor=actor, session_id=session_id, question=question, regions=list(regions or [])
    )
    run_job(view.id, ctx=platform.ctx)
    turns = platform.call(get_session, actor=actor, session_id=session_id).turns
    assert turns[-1].answer is not None
    return turns[-1].id


def _rate(platform, reviewer, turn_id, score, correct, verdicts=()):
    platform.call(
        rate_turn,
        actor=reviewer,
        turn_id=turn_id,
        text_score=score,
        text_correct=correct,
        mask_verdicts=list(verdicts),
    )


def _correct(platform, actor, turn_id, mask):
    platform.call(
        correct_mask,
        actor=actor,
        store=platform.store,
        turn_id=turn_id,
        mask_index=0,
        mask_rle=encode_rle(mask),
    )


REGION = {"kind": "box", "xyxy_px": [5, 5, 15, 15]}


@dataclass
class Scene:
    platform: object
    owner: object
    rev1: object
    rev2: object
    turns: dict[str, str]  # name → turn id


def _scene(platform) -> Scene:
    """T1 corrected twice by a reviewer (then by its owner), T2 a region answer judged correct,
    T3 a text answer accepted by one reviewer and rejected by another, T4 a mask rated good,
    T5 rejected, T6 unrated (corrected by its owner only)."""
    owner = _user(platform, "owner")
    rev1, rev2 = _user(platform, "rev1", Role.reviewer), _user(platform, "rev2", Role.reviewer)
    platform.call(lambda db: setattr(db.get(User, rev1.user_id), "display_name", "Ana | Reviewer"))
    a, b = _session(platform, owner, 0), _session(platform, owner, 1)
    t = {
        "T1": _ask(platform, owner, a, "Please segment the lesion."),
        "T2": _ask(platform, owner, a, "What is in <region>?", [REGION]),
        "T3": _ask(platform, owner, b, "Is this a CT scan?"),
        "T4": _ask(platform, owner, b, "Please segment the lesion."),
        "T5": _ask(platform, owner, b, "Describe it."),
        "T6": _ask(platform, owner, b, "Please segment the cyst."),
    }
    _correct(platform, rev1, t["T1"], box(0, 0, 10, 10))
    _correct(platform, rev1, t["T1"], box(2, 2, 14, 12))  # the latest version wins
    # Owners may correct their own answers, but only reviewers' versions are exported.
    _correct(platform, owner, t["T1"], box(0, 0, 40, 30))
    _correct(platform, owner, t["T6"], box(0, 0, 40, 30))
    _rate(platform, rev2, t["T1"], 2, None, ["wrong"])
    _rate(platform, rev2, t["T2"], 5, True)
    _rate(platform, rev1, t["T3"], 4, True)
    _rate(platform, rev2, t["T3"], 2, False)
    _rate(platform, rev2, t["T4"], 3, None, ["good"])
    _rate(platform, rev1, t["T5"], 1, False)
    return Scene(platform, owner, rev1, rev2, t)


def _export(scene: Scene, out: Path, **kw):
    return scene.platform.call(export_dataset, store=scene.platform.store, out_dir=out, **kw)


def _records(out: Path) -> dict[str, dict]:
    """origin turn id → record, over every task file."""
    found = {}
    for task in ("vqa", "region", "grounding"):
        for record in json.loads((out / task / "train.json").read_text()):
            assert record["task"] == task
            found[record["origin"].removeprefix("turn/")] = record
    return found


def _paths(text: str, tag: str) -> list[str]:
    return [part.split(f"</{tag}>")[0] for part in text.split(f"<{tag}>")[1:]]


def test_export_writes_a_checked_corpus_with_corrected_masks(database_url, make_platform, tmp_path):
    platform = make_platform(database_url, predictor=ScriptedPredictor())
    scene = _scene(platform)
    t = scene.turns
    out = tmp_path / "exported"
    summary = _export(scene, out, actor=scene.rev1)
    assert summary.out_dir == out
    assert (summary.items, summary.corrected, summary.images) == (4, 1, 2)
    assert summary.by_task == {"vqa": 1, "region": 1, "grounding": 2}
    records = _records(out)
    assert set(records) == {t["T1"], t["T2"], t["T3"], t["T4"]}

    # T1: the reviewer's latest correction, not the model's mask, in masks_merged/ and masks/.
    t1 = records[t["T1"]]
    question, answer = (c["value"] for c in t1["conversations"])
    assert question == "<image>\nPlease segment the lesion."
    (mask_path,) = _paths(answer, "mask")
    assert answer == f"It is the lesion <SEG><mask>{mask_path}</mask>."
    exported = load_mask(out / mask_path)
    assert np.array_equal(exported, box(2, 2, 14, 12))
    assert not np.array_equal(exported, MODEL_MASK)
    instance = mask_path.replace("masks_merged/", "masks/").replace("_merged.png", "_000.png")
    assert np.array_equal(load_mask(out / instance), exported)
    assert t1["corrected"] is True and t1["checkpoint"] == "scripted"
    # T4: nobody corrected it, a reviewer rated it good: the model's mask.
    (t4_mask,) = _paths(records[t["T4"]]["conversations"][1]["value"], "mask")
    assert np.array_equal(load_mask(out / t4_mask), MODEL_MASK)
    assert records[t["T4"]]["corrected"] is False

    # T2: the region prompt, rasterised in original pixels, inside the question.
    region_q = records[t["T2"]]["conversations"][0]["value"]
    (region_path,) = _paths(region_q, "region")
    assert region_q == f"<image>\nWhat is in <region>{region_path}</region>?"
    expected = prompt_to_mask(BoxPrompt((5, 5, 15, 15)), height_px=HW[0], width_px=HW[1])
    assert np.array_equal(load_mask(out / region_path), expected)
    assert records[t["T3"]]["conversations"][1]["value"] == "Yes, it is."
    assert records[t["T3"]]["answer_type"] == "closed"

    # The images are the display PNGs the model saw, byte for byte.
    key = platform.call(lambda db: db.get(Turn, t["T1"]).session.image.display_key)
    assert (out / t1["image"]).read_bytes() == platform.store.get(key)

    # `medplib data check` finds nothing wrong with any file.
    for task, n in summary.by_task.items():
        report = read_mecovqa(out / task / "train.json", out)
        assert (report.problems, report.notes, report.counts.valid) == ([], [], n)
        assert main(["data", "check", str(out / task / "train.json"), "--images", str(out)]) == 0

    card = json.loads((out / "data_card.json").read_text())
    assert (card["items"], card["corrected"], card["records"]) == (4, 1, summary.by_task)
    by_name = {r["username"]: r for r in card["reviewers"]}
    # rev1 rated T3 (T5 is not exported) and corrected T1; rev2 rated T1, T2, T3 and T4.
    assert by_name["rev1"] == {
        "username": "rev1",
        "display_name": "Ana | Reviewer",
        "items": 2,
        "rated": 1,
        "corrected": 1,
    }
    assert (by_name["rev2"]["items"], by_name["rev2"]["rated"], by_name["rev2"]["corrected"]) == (
        4,
        4,
        0,
    )
    md = (out / "data_card.md").read_text()
    assert (
        "| Ana \\| Reviewer | rev1 | 2 | 1 | 1 |" in md and "1 of them with a corrected mask" in md
    )
    assert _hidden(tmp_path) == []  # no work folder left behind


def _hidden(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_min_rating_and_since_filter_what_is_exported(sqlite_url, make_platform, tmp_path):
    platform = make_platform(sqlite_url, predictor=ScriptedPredictor())
    scene = _scene(platform)
    t = scene.turns
    by_score = _export(scene, tmp_path / "score4", actor=None, min_rating=4)
    # T2 (5) and T3 (4) pass on their score, T1 on its correction; T4 (3) does not.
    assert set(_records(tmp_path / "score4")) == {t["T1"], t["T2"], t["T3"]}
    assert by_score.by_task == {"vqa": 1, "region": 1, "grounding": 1}

    old, new = datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 6, 1, tzinfo=timezone.utc)

    def age(db):
        db.execute(update(Rating).values(created_at=old))
        db.execute(update(MaskCorrection).values(created_at=old))
        db.execute(
            update(Rating)
            .where(Rating.turn_id == t["T3"], Rating.reviewer_id == scene.rev1.user_id)
            .values(created_at=new)
        )

    platform.call(age)
    _export(scene, tmp_path / "recent", actor=None, since=datetime(2024, 3, 1))
    assert set(_records(tmp_path / "recent")) == {t["T3"]}
    card = json.loads((tmp_path / "recent" / "data_card.json").read_text())
    assert card["selection"]["since"] == "2024-03-01T00:00:00+00:00"
    _export(scene, tmp_path / "at", actor=None, since=new)  # "at or after"
    assert set(_records(tmp_path / "at")) == {t["T3"]}
    with pytest.raises(InvalidInput, match="rated or corrected since 2024-06-02"):
        _export(scene, tmp_path / "later", actor=None, since=datetime(2024, 6, 2))
    with pytest.raises(InvalidInput, match="at most 5"):
        _export(scene, tmp_path / "bad", actor=None, min_rating=6)
    assert not (tmp_path / "later").exists() and not (tmp_path / "bad").exists()


def test_class_export_holds_the_class_answers_and_their_sources(
    database_url, make_platform, tmp_path
):
    platform = make_platform(database_url, predictor=ScriptedPredictor())
    scene = _scene(platform)  # answers outside the class
    teacher = _user(platform, "teacher", Role.instructor)
    student = _user(platform, "student")
    case = _session(platform, teacher, 2)
    t7 = _ask(platform, teacher, case, "Please segment the lesion.")
    link, token = platform.call(
        create_share_link, actor=teacher, session_id=case, role=LinkRole.fork, kind=LinkKind.klass
    )
    fork = platform.call(fork_session, actor=student, token=token)
    copy = platform.call(get_session, actor=student, session_id=fork.id).turns[0]
    t8 = _ask(platform, student, fork.id, "Please segment the cyst.")
    _rate(platform, scene.rev1, copy.id, 5, True, ["good"])  # rates T7 through its copy
    _correct(platform, scene.rev2, t8, box(1, 1, 8, 8))
    summary = _export(scene, tmp_path / "class", actor=scene.rev2, class_link_id=link.id)
    records = _records(tmp_path / "class")
    assert set(records) == {t7, t8}  # the source answer, never the copy
    assert (summary.items, summary.corrected) == (2, 1)
    everything = _export(scene, tmp_path / "all", actor=scene.rev2)
    assert everything.items == 6
    with pytest.raises(NotFound, match="No class link"):
        _export(scene, tmp_path / "nope", actor=None, class_link_id="0" * 32)


def test_an_empty_selection_says_so_and_leaves_nothing(sqlite_url, make_platform, tmp_path):
    platform = make_platform(sqlite_url, predictor=ScriptedPredictor())
    owner, reviewer = _user(platform, "owner"), _user(platform, "rev", Role.reviewer)
    turn = _ask(platform, owner, _session(platform, owner, 0), "Please segment the lesion.")
    _rate(platform, reviewer, turn, 5, True, ["partly"])  # rated, but the mask not accepted
    out = tmp_path / "corpus"
    with pytest.raises(InvalidInput, match="Nothing to export: no reviewed answers match"):
        platform.call(export_dataset, store=platform.store, out_dir=out, actor=reviewer)
    assert not out.exists() and _hidden(tmp_path) == []
    # The same answer once its score is enough.
    platform.call(export_dataset, store=platform.store, out_dir=out, actor=None, min_rating=5)
    assert len(json.loads((out / "grounding" / "train.json").read_text())) == 1
    with pytest.raises(InvalidInput, match="is not empty"):
        platform.call(export_dataset, store=platform.store, out_dir=out, actor=None, min_rating=5)


def test_an_answer_that_cannot_be_a_record_is_left_out_and_named(
    sqlite_url, make_platform, tmp_path
):
    platform = make_platform(sqlite_url, predictor=ScriptedPredictor())
    owner, reviewer = _user(platform, "owner"), _user(platform, "rev", Role.reviewer)
    session_id = _session(platform, owner, 0)
    empty = _ask(platform, owner, session_id, "Please segment nothing.")
    _rate(platform, reviewer, empty, 5, True, ["good"])  # an empty mask rated good
    with pytest.raises(InvalidInput, match=f"turn {empty}: an exported mask is empty"):
        platform.call(export_dataset, store=platform.store, out_dir=tmp_path / "a", actor=None)
    kept = _ask(platform, owner, session_id, "Is it round?")
    _rate(platform, reviewer, kept, 4, True)
    summary = platform.call(
        export_dataset, store=platform.store, out_dir=tmp_path / "b", actor=None
    )
    assert summary.items == 1 and summary.by_task["vqa"] == 1
    card = json.loads((tmp_path / "b" / "data_card.json").read_text())
    assert card["skipped"] == [{"turn_id": empty, "reason": "an exported mask is empty"}]
    assert (
        f"turn {empty}: an exported mask is empty" in (tmp_path / "b" / "data_card.md").read_text()
    )


def test_only_reviewers_and_admins_may_export(sqlite_url, make_platform, tmp_path):
    platform = make_platform(sqlite_url, predictor=ScriptedPredictor())
    scene = _scene(platform)
    for name, role in (("someone", Role.user), ("teach", Role.instructor)):
        with pytest.raises(Forbidden, match="reviewer role"):
            _export(scene, tmp_path / name, actor=_user(platform, name, role))
        assert not (tmp_path / name).exists()
    assert _export(scene, tmp_path / "admin", actor=_user(platform, "boss", Role.admin)).items == 4


def test_the_cli_exports_and_refuses_bad_input_with_exit_2(
    sqlite_url, make_platform, tmp_path, monkeypatch, capsys
):
    platform = make_platform(sqlite_url, predictor=ScriptedPredictor())
    _scene(platform)
    monkeypatch.setenv("MEDPLIB_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("MEDPLIB_ARTEFACT_DIR", str(tmp_path / "artefacts"))
    out = tmp_path / "cli"
    base = ["review", "export-dataset", "--out", str(out)]
    assert main([*base, "--min-rating", "4", "--since", "2000-01-01"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1 and "exported 3 reviewed answers" in printed
    assert "1 corrected" in printed and str(out) in printed
    cases = {
        "bad date": ([*base[:-1], str(tmp_path / "x"), "--since", "yesterday"], "not a date"),
        "used folder": (base, "not an empty folder"),
        "nothing": ([*base[:-1], str(tmp_path / "y"), "--since", "2999-01-01"], "Nothing to"),
        "bad score": ([*base[:-1], str(tmp_path / "z"), "--min-rating", "0"], "at least 1"),
    }
    for name, (argv, message) in cases.items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (name, err)
    assert _hidden(tmp_path) == [] and not any((tmp_path / n).exists() for n in "xyz")
