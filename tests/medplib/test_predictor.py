from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from lm_helpers import ScriptedHead

import medplib.checkpoint as ckpt
from medplib.checkpoint import build_model
from medplib.conversation import SYSTEM_PROMPT
from medplib.errors import UserInputError
from medplib.modeling.sam_med2d import SamDecoderOutput
from medplib.predictor import MedPLIBPredictor, Prediction
from medplib.tokenization import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(
        [SYSTEM_PROMPT, "the liver is here. segment the kidney please."] * 8, vocab_size=400
    )


@pytest.fixture()
def predictor(tokenizer):
    return MedPLIBPredictor(build_model("tiny", tokenizer, seed=0), tokenizer)


def _image(h=60, w=90):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _script(predictor, text: str) -> list[int]:
    tok = predictor.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    predictor.model.language_model.lm_head = ScriptedHead(ids, len(tok))
    return ids


def test_default_untrained_checkpoint_loads_and_answers(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDPLIB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(ckpt, "ASSET_DEMO_DIR", tmp_path / "absent")
    p = MedPLIBPredictor.from_pretrained(None)
    assert (
        p.checkpoint_id.startswith("tiny-untrained-")
        and len(p.checkpoint_id) == len("tiny-untrained-") + 10
    )
    assert p.config.trained is False
    p.set_image(_image())
    pred = p.ask("What can you interpret from the overall image?", max_new_tokens=5)
    assert isinstance(pred, Prediction) and pred.checkpoint_id == p.checkpoint_id
    assert 1 <= len(pred.answer_token_ids) <= 5
    assert set(pred.timings) == {"encode_image", "prefill", "decode", "masks", "total"}
    assert pred.timings["total"] >= pred.timings["decode"] > 0
    json.dumps(pred.to_dict())
    assert MedPLIBPredictor.from_pretrained(None).checkpoint_id == p.checkpoint_id


@pytest.mark.parametrize("n_seg", [0, 1, 3])
def test_every_seg_in_the_answer_gives_a_mask(predictor, n_seg):
    predictor.set_image(_image(60, 90))
    _script(predictor, "the liver" + " <SEG>" * n_seg + ".")
    pred = predictor.ask("segment the liver")
    assert len(pred.masks) == n_seg
    assert pred.raw_answer.count("<SEG>") == n_seg
    assert "<SEG>" not in pred.answer and pred.answer == "the liver."
    for i, m in enumerate(pred.masks):
        assert m.mask.shape == (60, 90) and m.mask.dtype == bool
        assert m.seg_index == i and m.area_px == int(m.mask.sum())
        if m.area_px:
            ys, xs = np.nonzero(m.mask)
            assert m.bbox_xyxy_px == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert predictor.config.mask_threshold < m.score <= 1.0
        else:
            assert m.bbox_xyxy_px is None and m.score == 0.0


def test_mask_threshold_is_applied_to_sigmoid(predictor):
    predictor.set_image(_image(32, 32))
    _script(predictor, "<SEG>")
    lr = predictor.model.sam.img_size // 4
    logit = float(np.log(0.3 / 0.7))  # sigmoid = 0.3: above 0.1, below 0.5
    predictor.model.sam.decode_text_prompts = lambda e, t, i, multimask_output=False: (
        SamDecoderOutput(
            torch.full((t.shape[0], 1, lr, lr), logit), torch.full((t.shape[0], 1), 0.8)
        )
    )
    pred = predictor.ask("segment")
    assert pred.masks[0].area_px == 32 * 32
    assert pred.masks[0].score == pytest.approx(0.3, abs=1e-5)
    assert pred.masks[0].iou_prediction == pytest.approx(0.8)
    _script(predictor, "<SEG>")
    both = predictor.ask("segment", extra_thresholds=(0.2, 0.5)).masks[0]
    assert both.mask.all() and both.at_thresholds[0.2].all()
    assert not both.at_thresholds[0.5].any()
    predictor.config.mask_threshold = 0.5
    _script(predictor, "<SEG>")
    assert predictor.ask("segment").masks[0].area_px == 0


def test_image_is_encoded_once_per_set_image(predictor):
    calls = []
    predictor.model.vision_tower.register_forward_hook(lambda *a: calls.append(1))
    predictor.model.sam.image_encoder.register_forward_hook(lambda *a: calls.append(2))
    predictor.set_image(_image())
    for _ in range(3):
        predictor.ask("what is this?", max_new_tokens=2)
    assert calls == [1, 2]


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((1, 1, 3), np.uint8),
        np.zeros((40, 7), np.uint8),
        np.zeros((9, 30, 4), np.uint8),
        np.arange(600, dtype=np.uint16).reshape(20, 30),
    ],
)
def test_odd_images_are_accepted(predictor, image):
    predictor.set_image(image)
    assert predictor.image_hw == image.shape[:2]
    region = np.ones(image.shape[:2], bool)
    pred = predictor.ask("What is at <region>?", [region], max_new_tokens=2)
    assert pred.num_prompt_tokens > predictor.config.vision.num_patches


def test_bad_input_raises_actionable_user_errors(predictor):
    with pytest.raises(UserInputError, match="set_image"):
        predictor.ask("hello")
    with pytest.raises(UserInputError, match="8192"):
        predictor.set_image(np.zeros((8193, 10, 3), np.uint8))
    predictor.set_image(_image(60, 90))
    with pytest.raises(UserInputError, match="Region 1 is empty"):
        predictor.ask("what?", [np.zeros((60, 90), bool)])
    with pytest.raises(UserInputError, match="same image"):
        predictor.ask("what?", [np.ones((90, 60), bool)])
    with pytest.raises(UserInputError, match="more <region> tags"):
        predictor.ask("compare <region> and <region>", [np.ones((60, 90), bool)])
    with pytest.raises(UserInputError, match="empty"):
        predictor.ask("   ")
    with pytest.raises(UserInputError, match="top_p"):
        predictor.ask("what?", top_p=0.0)
    with pytest.raises(UserInputError, match="temperature"):
        predictor.ask("what?", temperature=-1)


def test_regions_change_the_prompt(predictor):
    predictor.set_image(_image(60, 90))
    a = np.zeros((60, 90), bool)
    a[:10, :10] = True
    b = np.zeros((60, 90), bool)
    b[40:, 60:] = True
    _script(predictor, "yes")
    one = predictor.ask("What is here?", [a])
    _script(predictor, "yes")
    two = predictor.ask("Compare <region> to", [a, b])
    assert (
        two.num_prompt_tokens - one.num_prompt_tokens >= 3
    )  # a second <region> x </region> triple


def test_history_is_used_and_truncated_from_the_left(predictor):
    predictor.set_image(_image())
    _script(predictor, "yes")
    plain = predictor.ask("and now?")
    _script(predictor, "yes")
    with_history = predictor.ask("and now?", history=[("what is this?", "a liver.")])
    assert with_history.num_prompt_tokens > plain.num_prompt_tokens
    long_turn = ("describe " * 120, "the liver " * 120)
    _script(predictor, "yes")
    pred = predictor.ask("and now?", history=[long_turn] * 6, max_new_tokens=8)
    assert any("oldest turn" in w for w in pred.warnings)
    assert pred.num_prompt_tokens + 8 <= predictor.config.language.max_position_embeddings
    _script(predictor, "yes")
    tagged = predictor.ask("ok?", history=[("what is at <region>?", "a cyst")])
    assert any("without its mask" in w for w in tagged.warnings)


def test_stop_strings_and_progress(predictor):
    predictor.set_image(_image())
    _script(predictor, "the liver is here. segment")
    seen: list[tuple[str, float]] = []
    pred = predictor.ask(
        "where?", stop=["here"], progress=lambda phase, frac: seen.append((phase, frac))
    )
    assert pred.finish_reason == "stop_string"
    assert pred.answer == "the liver is" and "here" not in pred.raw_answer
    phases = [p for p, _ in seen]
    assert phases[0] == "prefill" and "decode" in phases and seen[-1] == ("done", 1.0)
    assert all(0.0 <= f <= 1.0 for _, f in seen)


def test_routing_stats_describe_prompt_and_answer(predictor):
    predictor.set_image(_image())
    _script(predictor, "the liver")
    pred = predictor.ask("where?")
    r = pred.routing
    assert r.layers == [0, 1, 2, 3] and r.num_experts == 2
    for shares in (r.prompt_share, r.prompt_image_share, r.prompt_text_share, r.answer_share):
        assert len(shares) == 4 and all(sum(s) == pytest.approx(1.0) for s in shares)
    n_answer = len(pred.answer_token_ids) + 1  # + the final </s>
    assert len(r.answer_experts) == n_answer and all(len(t) == 4 for t in r.answer_experts)
    expected_share0 = sum(t[0] == 0 for t in r.answer_experts) / n_answer
    assert r.answer_share[0][0] == pytest.approx(expected_share0)
    json.dumps(r.to_dict())


def test_batch_prediction_matches_single_questions(predictor):
    images = [_image(60, 90), _image(30, 20)]
    region = np.ones((30, 20), bool)
    batch = predictor.predict_batch(
        images, ["what is this?", "what is at <region>?"], [[], [region]], max_new_tokens=4
    )
    predictor.set_image(images[0])
    first = predictor.ask("what is this?", max_new_tokens=4)
    predictor.set_image(images[1])
    second = predictor.ask("what is at <region>?", [region], max_new_tokens=4)
    assert [p.answer_token_ids for p in batch] == [first.answer_token_ids, second.answer_token_ids]


def test_seeded_sampling_is_reproducible(predictor):
    predictor.set_image(_image())
    a = predictor.ask("what?", temperature=1.0, top_p=0.9, seed=3, max_new_tokens=6)
    b = predictor.ask("what?", temperature=1.0, top_p=0.9, seed=3, max_new_tokens=6)
    assert a.answer_token_ids == b.answer_token_ids


def test_regions_of_dropped_history_turns_are_dropped_too(predictor):
    predictor.set_image(_image(60, 90))
    old_region = np.zeros((60, 90), bool)
    old_region[:5, :5] = True
    new_region = np.zeros((60, 90), bool)
    new_region[50:, 80:] = True
    history = [("what is at <region>?", "a cyst", [old_region])] + [("describe " * 150, "ok")] * 5
    _script(predictor, "yes")
    pred = predictor.ask("and at <region>?", [new_region], history=history, max_new_tokens=4)
    assert any("oldest turn" in w for w in pred.warnings)
    _script(predictor, "yes")
    kept_both = predictor.ask(
        "and at <region>?", [new_region], history=history[:1], max_new_tokens=4
    )
    assert kept_both.warnings == [] and kept_both.num_prompt_tokens > 0


def test_answer_streams_as_growing_text_that_ends_in_the_answer(predictor):
    predictor.set_image(_image())
    ids = _script(predictor, "the liver is here.")
    streamed: list[str] = []
    pred = predictor.ask("where?", on_text=streamed.append)
    assert pred.answer == "the liver is here."
    assert len(streamed) == len(ids) - 1  # one per token, none for the closing </s>
    assert streamed[-1] == pred.answer
    assert all(pred.answer.startswith(t.rstrip(".")) for t in streamed)
    assert [len(t) for t in streamed] == sorted(len(t) for t in streamed)
    assert len(set(streamed)) >= 3  # the words arrive over several calls


def _halves_decoder(predictor, plain_cols: str, mirror_cols: str, plain_p=0.6, mirror_p=0.8):
    """Mask decoder stub: view 0 (the image) lights `plain_cols` ("left"/"right" half) at
    probability `plain_p`, view 1 (the mirror, in its own columns) `mirror_cols` at `mirror_p`."""
    lr = predictor.model.sam.img_size // 4
    calls = []

    def half(which: str, p: float) -> torch.Tensor:
        out = torch.full((lr, lr), -20.0)
        cols = slice(0, lr // 2) if which == "left" else slice(lr // 2, lr)
        out[:, cols] = float(np.log(p / (1 - p)))
        return out

    def decode(e, t, i, multimask_output=False):
        calls.append(i.tolist())
        maps = [half(plain_cols, plain_p) if v == 0 else half(mirror_cols, mirror_p) for v in i]
        return SamDecoderOutput(torch.stack(maps)[:, None], torch.full((t.shape[0], 1), 0.8))

    predictor.model.sam.decode_text_prompts = decode
    return calls


def test_mirror_tta_averages_a_mask_that_its_mirror_confirms(predictor):
    predictor.config.flip_tta_min_agreement = 0.7
    predictor.config.mask_threshold = 0.5
    predictor.set_image(_image(64, 64))
    calls = _halves_decoder(predictor, "left", "right")  # the mirror's right is the left
    _script(predictor, "<SEG>")
    m = predictor.ask("segment").masks[0]
    assert calls == [[0, 1]]
    assert m.mask[:, :24].all() and not m.mask[:, 40:].any()
    assert m.score == pytest.approx(0.7, abs=0.02)  # (0.6 + 0.8) / 2 inside, not 0.6
    assert m.mirror_agreement == pytest.approx(1.0, abs=0.05)
    assert m.to_dict()["mirror_agreement"] == m.mirror_agreement
    predictor.config.flip_tta_min_agreement = None
    predictor.set_image(_image(64, 64))
    calls = _halves_decoder(predictor, "left", "right")
    _script(predictor, "<SEG>")
    m = predictor.ask("segment").masks[0]
    assert calls == [[0]] and m.score == pytest.approx(0.6, abs=0.02)
    assert m.mirror_agreement is None


def test_mirror_tta_keeps_the_plain_mask_when_the_mirror_points_to_the_other_side(predictor):
    predictor.config.flip_tta_min_agreement = 0.7
    predictor.config.mask_threshold = 0.5
    predictor.set_image(_image(64, 64))
    _halves_decoder(predictor, "left", "left")  # "the left kidney" on a mirrored body
    _script(predictor, "<SEG>")
    m = predictor.ask("segment the left kidney").masks[0]
    assert m.mask[:, :24].all() and not m.mask[:, 40:].any()
    assert m.score == pytest.approx(0.6, abs=0.02)
    assert m.mirror_agreement == pytest.approx(0.0, abs=0.05)


def test_mirror_tta_decodes_on_the_mirrored_image(predictor):
    """The second view is the same <SEG> decoded on the mirrored image's own SAM encoding; with
    the gate at 0 every mask is the average of the two views, the mirror flipped back."""
    image = _image(48, 72)
    original = predictor.model.decode_masks
    calls = []

    def spy(*args):
        out = original(*args)
        calls.append((args, out))
        return out

    predictor.model.decode_masks = spy
    predictor.config.flip_tta_min_agreement = 0.0
    predictor.config.mask_threshold = 0.5  # the untrained maps lie near 0.5: half in, half out
    predictor.set_image(image)
    _script(predictor, "<SEG>")
    merged = predictor.ask("segment").masks[0]
    (hidden, embeddings, index, input_hw, output_hw), (logits, _) = calls[0]
    assert index.tolist() == [0, 1] and len(logits) == 2

    predictor.config.flip_tta_min_agreement = None
    plain_emb = predictor._encode([image])[0].sam_embedding
    mirror_emb = predictor._encode([np.ascontiguousarray(image[:, ::-1])])[0].sam_embedding
    assert torch.allclose(embeddings[0:1], plain_emb, atol=1e-4)
    assert torch.allclose(embeddings[1:2], mirror_emb, atol=1e-4)
    one = torch.zeros(1, dtype=torch.long)
    (ref_mirror,), _ = original(hidden[:1], mirror_emb, one, input_hw[:1], output_hw[:1])
    assert torch.allclose(logits[1], ref_mirror, atol=1e-3)

    plain, back = logits[0].float().sigmoid(), logits[1].float().sigmoid().flip(-1)
    assert not torch.allclose(plain, back, atol=1e-3)  # the views differ, so the test can fail
    expected = ((plain + back) / 2 > 0.5).numpy()
    assert 0.05 < expected.mean() < 0.95 and not np.array_equal(expected, (plain > 0.5).numpy())
    assert np.array_equal(merged.mask, expected)


def test_turning_mirror_tta_on_after_set_image_keeps_the_plain_decode(predictor):
    """The mirror is encoded with the image; an image encoded without it answers plainly."""
    predictor.set_image(_image(64, 64))
    predictor.config.flip_tta_min_agreement = 0.7
    calls = _halves_decoder(predictor, "left", "right")
    _script(predictor, "<SEG>")
    m = predictor.ask("segment").masks[0]
    assert calls == [[0]] and m.mirror_agreement is None
    predictor.set_image(_image(64, 64))
    _script(predictor, "<SEG>")
    assert predictor.ask("segment").masks[0].mirror_agreement == pytest.approx(1.0, abs=0.05)
