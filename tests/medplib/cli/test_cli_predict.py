"""`medplib predict` run in-process on the default (untrained) checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lm_helpers import ScriptedHead
from PIL import Image

import medplib.cli.predict as predict_cli
from medplib.cli import main
from medplib.masks import decode_rle, mask_bbox_xyxy_px, png_bytes_to_mask

H, W = 48, 72


# The untrained fallback is under test here, not the bundled demo checkpoint.
pytestmark = pytest.mark.usefixtures("untrained_default")


@pytest.fixture()
def image_path(tmp_path) -> Path:
    rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    path = tmp_path / "scan.png"
    Image.fromarray(rgb).save(path)
    return path


def _run(capsys, argv: list[str]) -> tuple[int, dict | None, str]:
    code = main(["predict", *argv])
    cap = capsys.readouterr()
    return code, (json.loads(cap.out) if code == 0 else None), cap.err


def test_point_and_box_on_the_default_checkpoint(tmp_path, image_path, capsys):
    out = tmp_path / "masks"
    argv = ["--image", str(image_path), "--question", "Compare <region> with <region>."]
    argv += ["--point", "10,12", "--box", "20,5,60,40", "--out", str(out), "--max-new-tokens", "6"]
    code, doc, err = _run(capsys, argv)
    assert code == 0, err
    assert isinstance(doc, dict)
    for key, kind in {
        "answer": str,
        "raw_answer": str,
        "masks": list,
        "routing": dict,
        "timings": dict,
        "warnings": list,
        "checkpoint_id": str,
        "finish_reason": str,
        "num_prompt_tokens": int,
    }.items():
        assert isinstance(doc[key], kind), key
    assert doc["checkpoint_id"].startswith("tiny-untrained-")
    assert "untrained" in doc["warnings"][0]
    assert doc["regions"] == [
        {"kind": "point", "xy_px": [10.0, 12.0]},
        {"kind": "box", "xyxy_px": [20.0, 5.0, 60.0, 40.0]},
    ]
    assert doc["image"]["height_px"] == H and doc["image"]["width_px"] == W
    routing = doc["routing"]
    assert routing["num_experts"] == 2 and len(routing["prompt_share"]) == len(routing["layers"])
    assert all(abs(sum(share) - 1.0) < 1e-6 for share in routing["prompt_share"])
    assert all(doc["timings"][k] >= 0 for k in ("load_checkpoint", "prefill", "decode", "total"))
    # 64 visual tokens replace one placeholder; two region slots are in the text.
    assert doc["num_prompt_tokens"] > 64
    for m in doc["masks"]:  # an untrained model may or may not say <SEG>
        assert png_bytes_to_mask(Path(m["png"]).read_bytes()).shape == (H, W)


def test_seg_answer_writes_masks_that_match_their_rle(tmp_path, image_path, capsys, monkeypatch):
    real_loader = predict_cli.load_predictor

    def scripted(checkpoint, device, dtype):
        predictor = real_loader(checkpoint, device, dtype)
        tok = predictor.tokenizer
        ids = tok("the liver ", add_special_tokens=False)["input_ids"]
        seg = tok.convert_tokens_to_ids("<SEG>")
        script = [*ids, seg, *ids, seg, tok.eos_token_id]
        predictor.model.language_model.lm_head = ScriptedHead(script, len(tok))
        return predictor

    monkeypatch.setattr(predict_cli, "load_predictor", scripted)
    out = tmp_path / "o"
    argv = ["--image", str(image_path), "--question", "Segment the liver.", "--out", str(out)]
    code, doc, err = _run(capsys, argv)
    assert code == 0, err
    assert doc["raw_answer"].count("<SEG>") == 2 and "<SEG>" not in doc["answer"]
    assert [m["seg_index"] for m in doc["masks"]] == [0, 1]
    assert doc["out_dir"] == str(out.resolve())
    for m in doc["masks"]:
        path = Path(m["png"])
        assert path.parent == out.resolve() and path.name.startswith("scan-")
        mask = png_bytes_to_mask(path.read_bytes())
        assert mask.shape == (H, W) == (m["height_px"], m["width_px"])
        assert np.array_equal(decode_rle(m["rle"]), mask)
        assert m["area_px"] == int(mask.sum())
        box = mask_bbox_xyxy_px(mask)
        assert m["bbox_xyxy_px"] == (list(box) if box else None)
        assert 0.0 <= m["score"] <= 1.0
    # Same request again: same file names (no pile-up, no clobbering of other requests).
    code, again, _ = _run(capsys, argv)
    assert code == 0 and [m["png"] for m in again["masks"]] == [m["png"] for m in doc["masks"]]
    assert len(list(out.iterdir())) == 2


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--point", "1,2,x"], "--point '1,2,x' is not 2 comma-separated numbers"),
        (["--point", "500,5"], "outside"),
        (["--box", "nan,0,10,10"], "finite"),
        (["--box", "5,5,5,20"], "zero width"),
        (["--box", "1,2,3"], "not 4 comma-separated numbers"),
        (["--region-mask", "MISSING"], "does not exist"),
        (["--region-mask", "SMALL"], "mask is"),
        (["--checkpoint", "NOWHERE"], "not a MedPLIB checkpoint"),
        (["--temperature", "nan"], "finite"),
    ],
)
def test_bad_input_exits_2_with_one_sentence(tmp_path, image_path, capsys, extra, needle):
    small = tmp_path / "small.png"
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(small)
    extra = [
        {"MISSING": str(tmp_path / "nope.png"), "SMALL": str(small)}.get(a, a).replace(
            "NOWHERE", str(tmp_path / "no-ckpt")
        )
        for a in extra
    ]
    code, _, err = _run(capsys, ["--image", str(image_path), "--question", "Where?", *extra])
    assert code == 2
    assert err.startswith("medplib predict: error: ") and needle in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_missing_image_and_non_image(tmp_path, capsys):
    code, _, err = _run(capsys, ["--image", str(tmp_path / "x.png"), "--question", "Where?"])
    assert code == 2 and "--image" in err and "does not exist" in err
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    code, _, err = _run(capsys, ["--image", str(text), "--question", "Where?"])
    assert code == 2 and "not an image" in err


def test_region_mask_png_is_used_as_drawn(tmp_path, image_path, capsys, monkeypatch):
    seen = {}
    real_loader = predict_cli.load_predictor

    def spy(checkpoint, device, dtype):
        predictor = real_loader(checkpoint, device, dtype)
        ask = predictor.ask

        def record(question, regions, **kw):
            seen["regions"] = [r.copy() for r in regions]
            return ask(question, regions, **kw)

        predictor.ask = record
        return predictor

    monkeypatch.setattr(predict_cli, "load_predictor", spy)
    drawn = np.zeros((H, W), np.uint8)
    drawn[5:20, 30:50] = 200
    mask_path = tmp_path / "region.png"
    Image.fromarray(drawn).save(mask_path)
    argv = ["--image", str(image_path), "--question", "What is this?", "--max-new-tokens", "2"]
    code, doc, err = _run(capsys, [*argv, "--region-mask", str(mask_path), "--point", "3,4"])
    assert code == 0, err
    assert doc["regions"][0] == {"kind": "mask", "area_px": 15 * 20}
    assert np.array_equal(seen["regions"][0], drawn > 0)
    assert seen["regions"][1][4, 3] and seen["regions"][1].sum() < H * W


def test_nifti_volume_and_negative_box_corner(tmp_path, capsys):
    import nibabel as nib

    volume = np.random.default_rng(2).normal(0, 200, (40, 30, 6)).astype(np.int16)
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))
    argv = ["--image", str(path), "--question", "Describe <region>.", "--nifti-slice", "2"]
    code, doc, err = _run(capsys, [*argv, "--box=-4,-4,10,12", "--max-new-tokens", "2"])
    assert code == 0, err
    assert doc["image"]["source_format"] == "nifti"
    hw = (doc["image"]["height_px"], doc["image"]["width_px"])
    assert sorted(hw) == [30, 40]  # one axial slice of the 40 x 30 x 6 volume
    assert doc["regions"] == [{"kind": "box", "xyxy_px": [-4.0, -4.0, 10.0, 12.0]}]
