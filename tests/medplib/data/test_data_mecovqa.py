"""MeCoVQA reader: good records parse, every bad one is reported with its index and skipped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from data_helpers import class_ids, record, write_json, write_png
from PIL import Image

from medplib.cli import main
from medplib.data import MeCoVQADataset, load_image_rgb, load_mask, read_mecovqa
from medplib.data.mecovqa import parse_record
from medplib.errors import UserInputError
from medplib.masks import resize_mask_nearest

STEM = "ct_00--AMOS--amos_0004--z_0075"
IMAGE = f"images/{STEM}.png"


def _mask(cls: str, inst: str = "000", stem: str = STEM) -> str:
    return f"masks/{stem}--{class_ids()[cls]:04d}_{inst}.png"


@pytest.fixture
def root(samed2d_root: Path, tmp_path: Path) -> Path:
    """A writable copy of the SA-Med2D fixture with a few deliberately odd files added."""
    dst = shutil.copytree(samed2d_root, tmp_path / "root")
    liver = load_mask(dst / _mask("liver"))  # (512, 512) bool
    write_png(dst / "masks/empty.png", np.zeros((512, 512), np.uint8))
    (dst / "masks/garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG body")
    (dst / "images/broken.png").write_bytes(b"not an image at all")
    rgb = np.zeros((512, 512, 3), np.uint8)
    rgb[liver] = (0, 200, 0)  # colour mask: only the green channel is set
    write_png(dst / "masks/rgb_liver.png", rgb)
    wide = liver.astype(np.uint16) * 40000  # 16-bit mask, values far above 255
    Image.fromarray(wide).save(dst / "masks/liver16.png")
    small = Image.fromarray(liver.astype(np.uint8) * 255).resize((128, 128), Image.NEAREST)
    small.save(dst / "masks/liver_small.png")
    return dst


GOOD = [
    record(IMAGE, "<image>\nWhat can you interpret from the overall image?", "An abdominal CT."),
    record(
        IMAGE,
        f"<image>\nCan you describe what is seen at the area <region>{_mask('liver')}</region>?",
        "The liver.",
        id="region-1",
    ),
    record(
        IMAGE,
        "<image>\nPlease segment the aorta.",
        f"The aorta: <SEG><mask>{_mask('aorta')}</mask>.",
        answer_type="open",
    ),
]


def _bad_records() -> list[tuple[object, str]]:
    """(record, expected words of the reason), one per kind of damage."""
    q, seg = "<image>\nPlease segment the liver.", f"<SEG><mask>{_mask('liver')}</mask>"
    return [
        (record("images/nope.png", "<image>\nHi?", "Hello."), "not found"),
        (record(IMAGE, q, "<SEG><mask>masks/missing.png</mask>"), "mask masks/missing.png not found"),
        (record(IMAGE, q, "<SEG><mask>masks/empty.png</mask>"), "is empty"),
        (record(IMAGE, q, "<SEG><mask>masks/garbage.png</mask>"), "cannot be decoded"),
        (record("images/broken.png", "<image>\nHi?", "Hello."), "cannot be decoded"),
        (record(IMAGE, f"<image>\nWhat is <region>{_mask('liver')}?", "Liver."), "never closed"),
        (record(IMAGE, "<image>\nWhat is x</region>?", "Liver."), "without a matching"),
        (record(IMAGE, f"<image>\nSee <mask>{_mask('liver')}</mask>", "Ok."), "belong in a gpt"),
        (record(IMAGE, q, "<SEG>"), "<SEG> without a <mask>"),
        (record(IMAGE, q, f"<mask>{_mask('liver')}</mask>"), "<mask> path without a <SEG>"),
        (record(IMAGE, q, "<SEG><mask></mask>"), "empty <mask></mask>"),
        (record(IMAGE, seg, "Ok."), "<SEG> belongs in a gpt answer"),
        ({"image": IMAGE, "conversations": "hello"}, "must be a list"),
        ({"image": IMAGE, "conversations": []}, "is empty"),
        ("just a string", "record is a str"),
        (
            {"image": IMAGE, "conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}]},
            "roles must alternate",
        ),
        ({"image": IMAGE, "conversations": [{"from": "human", "value": "<image>\nHi"}]}, "no gpt answer"),
        ({"conversations": GOOD[0]["conversations"]}, "'image' is missing"),
        ({"image": IMAGE, "conversations": [{"from": "human"}, {"from": "gpt", "value": "x"}]}, "not an object"),
    ]  # fmt: skip


def test_good_records_parse_into_turns_with_paths_moved_out_of_the_text(root: Path, tmp_path: Path):
    report = read_mecovqa(write_json(tmp_path / "good.json", GOOD), root)
    assert report.problems == []
    assert report.counts.valid == 3 and report.counts.skipped == 0
    vqa, region, grounding = report.samples
    assert [s.task for s in report.samples] == ["vqa", "region", "grounding"]
    assert [s.id for s in report.samples] == ["0", "region-1", "2"]  # index unless `id` is given
    assert region.turns[0].question.endswith("the area <region></region>?")
    assert region.turns[0].region_mask_paths == (_mask("liver"),)
    assert grounding.turns[0].answer == "The aorta: <SEG>."
    assert grounding.turns[0].target_mask_paths == (_mask("aorta"),)
    assert grounding.answer_type == "open" and vqa.answer_type is None
    assert {s.modality for s in report.samples} == {"ct"}  # from the "ct_00--" prefix
    assert {s.source for s in report.samples} == {"AMOS"}
    assert report.counts.by_task == {"vqa": 1, "region": 1, "grounding": 1}
    assert report.counts.by_modality == {"ct": 3}


def test_every_bad_record_is_reported_with_index_and_reason_and_skipped(root: Path, tmp_path: Path):
    bad = _bad_records()
    records = [GOOD[0], *[r for r, _ in bad], GOOD[2]]
    report = read_mecovqa(write_json(tmp_path / "mixed.json", records), root)
    assert report.counts.records == len(records)
    assert report.counts.valid == 2 and report.counts.skipped == len(bad)
    assert [s.index for s in report.samples] == [0, len(records) - 1]
    assert [p.index for p in report.problems] == list(range(1, len(bad) + 1))
    for problem, (_, words) in zip(report.problems, bad, strict=True):
        assert words in problem.reason, (problem, words)


def test_colour_16bit_and_other_size_masks_are_kept_with_notes(root: Path, tmp_path: Path):
    records = [
        record(IMAGE, "<image>\nSegment it.", f"<SEG><mask>{m}</mask>")
        for m in ("masks/rgb_liver.png", "masks/liver16.png", "masks/liver_small.png")
    ]
    report = read_mecovqa(write_json(tmp_path / "odd.json", records), root)
    assert report.problems == [] and report.counts.valid == 3
    notes = {n.index: n.reason for n in report.notes}
    assert "colour mask" in notes[0]
    assert 1 not in notes  # a 16-bit mask is read as is: any non-zero value is foreground
    assert "128x128 but the image is 512x512; resized" in notes[2]
    liver = load_mask(root / _mask("liver"))
    assert np.array_equal(load_mask(root / "masks/rgb_liver.png"), liver)
    assert np.array_equal(load_mask(root / "masks/liver16.png"), liver)


def test_missing_png_suffix_is_resolved_and_counted(root: Path, tmp_path: Path):
    rec = record(
        IMAGE.removesuffix(".png"),
        "<image>\nSegment the liver.",
        f"<SEG><mask>{_mask('liver').removesuffix('.png')}</mask>",
    )
    report = read_mecovqa(write_json(tmp_path / "suffix.json", [rec]), root)
    assert report.problems == []
    assert report.counts.suffix_fixed == 2
    assert report.samples[0].image_path == IMAGE
    assert report.samples[0].turns[0].target_mask_paths == (_mask("liver"),)


def test_without_file_checks_only_structure_is_validated(root: Path, tmp_path: Path):
    records = [record("images/nope.png", "<image>\nHi?", "Hello."), "not a record"]
    report = read_mecovqa(write_json(tmp_path / "x.json", records), root, check_files=False)
    assert report.counts.valid == 1 and [p.index for p in report.problems] == [1]


def test_modality_source_and_declared_task(root: Path, tmp_path: Path):
    rec = record("images/dermoscopy_00--isic2018--ISIC_1--2d_none.png", "<image>\nHi", "Hi")
    sample = parse_record(rec, 7)
    assert (sample.modality, sample.source, sample.id, sample.task) == (
        "dermoscopy",
        "isic2018",
        "7",
        "vqa",
    )
    sample = parse_record({**rec, "modality": "Fundus", "source": "mine", "id": 5}, 0)
    assert (sample.modality, sample.source, sample.id) == ("fundus", "mine", "5")
    rec = {**GOOD[0], "task": "grounding"}
    report = read_mecovqa(write_json(tmp_path / "t.json", [rec]), root)
    assert report.samples[0].task == "vqa"
    assert "'task' says 'grounding'" in report.notes[0].reason


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('[{"image": "a.png", ', "is not valid JSON (line 1"),
        ('{"image": "a.png"}', "holds a JSON dict"),
        ("42", "holds a JSON int"),
    ],
)
def test_file_level_problems_raise_user_input_error(tmp_path: Path, content: str, words: str):
    path = tmp_path / "f.json"
    path.write_text(content)
    with pytest.raises(UserInputError, match=words.replace("(", r"\(")):
        read_mecovqa(path, tmp_path)


def test_missing_json_or_image_root_raise_user_input_error(tmp_path: Path):
    with pytest.raises(UserInputError, match="does not exist"):
        read_mecovqa(tmp_path / "absent.json", tmp_path)
    with pytest.raises(UserInputError, match="is not a folder"):
        read_mecovqa(write_json(tmp_path / "e.json", []), tmp_path / "no-root")


def test_image_loader_handles_16bit_grey_and_rgba(tmp_path: Path):
    ramp = np.arange(0, 65536, 256, dtype=np.uint16).reshape(16, 16)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    rgb = load_image_rgb(tmp_path / "ramp16.png")
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255  # stretched from its own range
    assert np.all(np.diff(rgb[..., 0].ravel().astype(int)) >= 0)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    write_png(tmp_path / "rgba.png", rgba)
    assert load_image_rgb(tmp_path / "rgba.png")[0, 0].tolist() == [200, 0, 0]


def test_dataset_loads_image_and_masks(root: Path, tmp_path: Path):
    ds = MeCoVQADataset(write_json(tmp_path / "good.json", GOOD), root)
    assert len(ds) == 3
    item = ds[2]
    assert item.image.shape == (512, 512, 3) and item.image.dtype == np.uint8
    assert item.qa_pairs == [("<image>\nPlease segment the aorta.", "The aorta: <SEG>.")]
    (aorta,) = item.target_masks
    assert np.array_equal(aorta, load_mask(root / _mask("aorta")))
    assert ds[1].regions[0].sum() == load_mask(root / _mask("liver")).sum()
    assert ds[-1].sample.id == "2"
    with pytest.raises(IndexError):
        ds[3]


def test_dataset_resizes_masks_to_the_image(root: Path, tmp_path: Path):
    rec = record(IMAGE, "<image>\nSegment it.", "<SEG><mask>masks/liver_small.png</mask>")
    ds = MeCoVQADataset(write_json(tmp_path / "s.json", [rec]), root)
    (mask,) = ds[0].target_masks
    assert mask.shape == (512, 512)
    liver = load_mask(root / _mask("liver"))
    assert (mask & liver).sum() / (mask | liver).sum() > 0.9
    # The same pixels the evaluator's resize gives: training and scoring see one target.
    small = load_mask(root / "masks/liver_small.png")
    assert np.array_equal(mask, resize_mask_nearest(small, (512, 512)))
    ds[0]
    assert len(ds.notes) == 1  # noted once per sample, not once per access


def test_mask_resize_ties_follow_the_evaluators_pixel_centre_rule(root: Path, tmp_path: Path):
    # 2 -> 7 px puts output centres exactly on input pixel borders: the rule
    # floor((i + 0.5) * 2 / 7) gives rows and columns 0..2 to input pixel 0 (PIL gave 0..3).
    write_png(root / "images/tiny.png", np.full((7, 7, 3), 90, np.uint8))
    write_png(root / "masks/tiny.png", np.array([[255, 0], [0, 0]], np.uint8))
    rec = record("images/tiny.png", "<image>\nSegment it.", "<SEG><mask>masks/tiny.png</mask>")
    (mask,) = MeCoVQADataset(write_json(tmp_path / "t.json", [rec]), root)[0].target_masks
    expected = np.zeros((7, 7), bool)
    expected[:3, :3] = True
    np.testing.assert_array_equal(mask, expected)


def test_dataset_replaces_a_sample_that_breaks_at_access_time(root: Path, tmp_path: Path):
    other = root / "images" / "ct_00--TotalSegmentator--s0114--z_0111.png"
    records = [GOOD[0], record(str(other.relative_to(root)), "<image>\nHi?", "Hello."), GOOD[2]]
    ds = MeCoVQADataset(write_json(tmp_path / "d.json", records), root)
    other.unlink()  # gone after the dataset was built: the epoch must go on
    items = [ds[i] for i in range(len(ds))]
    assert [it.sample.index for it in items] == [0, 2, 2]
    assert [(p.index, "at load time" in p.reason) for p in ds.problems] == [(1, True)]
    ds[1]
    assert len(ds.problems) == 1  # a known-bad sample is skipped without a second report


def test_dataset_with_nothing_loadable_raises_user_input_error(root: Path, tmp_path: Path):
    with pytest.raises(UserInputError, match="no valid record"):
        MeCoVQADataset(write_json(tmp_path / "b.json", ["x", 1]), root)
    (root / "images" / "lonely.png").write_bytes((root / IMAGE).read_bytes())
    ds = MeCoVQADataset(
        write_json(tmp_path / "l.json", [record("images/lonely.png", "q", "a")]), root
    )
    (root / "images" / "lonely.png").unlink()
    with pytest.raises(UserInputError, match="could be loaded"):
        ds[0]


def test_cli_check_prints_problems_and_counts(root: Path, tmp_path: Path, capsys):
    records = [GOOD[0], "oops", GOOD[2]]
    path = write_json(tmp_path / "c.json", records)
    assert main(["data", "check", str(path), "--images", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "#1 1: record is a str, not an object"
    assert "task: vqa 1, grounding 1" in lines
    assert "modality: ct 2" in lines
    assert lines[-1] == "2 valid, 1 skipped"


def test_cli_check_exit_codes(root: Path, tmp_path: Path, capsys):
    none_valid = write_json(tmp_path / "n.json", ["x", {"image": 3}])
    assert main(["data", "check", str(none_valid), "--images", str(root)]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "0 valid, 2 skipped"
    corrupt = tmp_path / "bad.json"
    corrupt.write_text("[{")
    assert main(["data", "check", str(corrupt), "--images", str(root)]) == 2
    assert "is not valid JSON" in capsys.readouterr().err
    dict_file = write_json(tmp_path / "d.json", {"data": []})
    assert main(["data", "check", str(dict_file), "--images", str(root)]) == 2


def test_reads_a_file_written_by_json_dump_with_unicode(root: Path, tmp_path: Path):
    rec = record(
        IMAGE, "<image>\nWhat is the density (HU) – roughly?", "About 50 HU ≈ soft tissue."
    )
    path = tmp_path / "u.json"
    path.write_text(json.dumps([rec], ensure_ascii=False), encoding="utf-8")
    report = read_mecovqa(path, root)
    assert report.samples[0].turns[0].answer == "About 50 HU ≈ soft tissue."


def test_loaded_sample_fits_the_model_batching_contract(root: Path, tmp_path: Path):
    from medplib.conversation import count_region_tags
    from medplib.modeling.batching import Sample as ModelSample
    from medplib.modeling.batching import assign_region_tags

    ds = MeCoVQADataset(write_json(tmp_path / "good.json", GOOD), root)
    region, grounding = ds[1], ds[2]
    turns = assign_region_tags(region.qa_pairs, len(region.regions))
    assert [count_region_tags(q) for q, _ in turns] == [1] == [len(region.regions)]
    ModelSample(image=region.image, turns=turns, regions=region.regions)
    answer = grounding.qa_pairs[0][1]
    assert answer.count("<SEG>") == len(grounding.target_masks) == 1
