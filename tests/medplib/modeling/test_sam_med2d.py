"""Tests for the SAM-Med2D pixel decoder (tiny config on CPU; ViT-B only on the meta device)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medplib.errors import UserInputError
from medplib.modeling.sam_med2d import (
    SamImageEncoderConfig,
    SamMed2D,
    SamMed2DConfig,
    build_sam_med2d,
    centred_pad_offsets,
    resize_longest_side_hw,
)
from medplib.modeling.sam_med2d.image_encoder import (
    relative_position_bias,
    window_partition,
    window_unpartition,
)

KEYS_FIXTURE = Path(__file__).with_name("sam_med2d_b_keys.json")
MEAN = torch.tensor([123.675, 116.28, 103.53])
STD = torch.tensor([58.395, 57.12, 57.375])


@pytest.fixture
def tiny() -> SamMed2D:
    torch.manual_seed(0)
    return build_sam_med2d(SamMed2DConfig.tiny()).eval()


def _text(n: int, dim: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, dim, generator=torch.Generator().manual_seed(seed))


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize("factory", [SamMed2DConfig.vit_b, SamMed2DConfig.tiny])
def test_config_round_trips_through_json(factory) -> None:
    config = factory()
    restored = SamMed2DConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert isinstance(restored.image_encoder.global_attn_indexes, tuple)


def test_config_rejects_unknown_keys_and_inconsistent_widths() -> None:
    data = SamMed2DConfig.tiny().to_dict()
    data["image_encoder"]["embed_dims"] = 64
    with pytest.raises(UserInputError, match="embed_dims"):
        SamMed2DConfig.from_dict(data)
    data = SamMed2DConfig.tiny().to_dict()
    data["mask_decoder"]["transformer_dim"] = 128
    data["mask_decoder"]["iou_head_hidden_dim"] = 128
    with pytest.raises(UserInputError, match="must be equal"):
        SamMed2DConfig.from_dict(data)
    with pytest.raises(UserInputError, match="even"):
        SamImageEncoderConfig(img_size=48, patch_size=16)  # 3x3 grid cannot round-trip the adapter


# --- official ViT-B layout ---------------------------------------------------------------------


def test_vit_b_state_dict_matches_released_checkpoint_layout() -> None:
    fixture = json.loads(KEYS_FIXTURE.read_text())
    expected = {name: tuple(shape) for name, shape in fixture["state_dict"].items()}
    with torch.device("meta"):
        model = build_sam_med2d(SamMed2DConfig.vit_b())
    actual = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert sorted(set(expected) - set(actual)) == []
    assert sorted(set(actual) - set(expected)) == []
    assert {n: s for n, s in actual.items() if expected[n] != s} == {}
    assert len(actual) == 386
    assert actual["image_encoder.blocks.2.attn.rel_pos_h"] == (31, 64)  # global block: 2*16-1
    assert actual["image_encoder.blocks.3.Adapter.spatial.2.weight"] == (768, 768, 4, 4)

    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == fixture["num_parameters"] == 271_241_776
    assert 0.26e9 < n_params < 0.28e9
    adapter = sum(p.numel() for n, p in model.named_parameters() if ".Adapter." in n)
    assert 14.5e6 < adapter / 12 < 15.5e6  # each adapter ~15 M (3x3 conv + 4x4 transposed conv)

    checkpoint = {n: torch.empty(s, device="meta") for n, s in expected.items()}
    result = model.load_state_dict(checkpoint, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_pixel_stats_survive_meta_materialisation() -> None:
    with torch.device("meta"):
        model = build_sam_med2d(SamMed2DConfig.tiny())
    model.to_empty(device="cpu")
    model.reset_pixel_stats()
    assert torch.equal(model.pixel_mean.flatten(), MEAN)
    assert torch.equal(model.pixel_std.flatten(), STD)


# --- image encoder internals -------------------------------------------------------------------


def test_relative_position_bias_matches_its_definition() -> None:
    g = torch.Generator().manual_seed(0)
    h, w, d = 3, 4, 5
    q = torch.randn(2, h * w, d, generator=g, dtype=torch.float64)
    rel_h = torch.randn(2 * h - 1, d, generator=g, dtype=torch.float64)
    rel_w = torch.randn(2 * w - 1, d, generator=g, dtype=torch.float64)
    bias = relative_position_bias(q, rel_h, rel_w, (h, w))
    expected = torch.empty(2, h * w, h * w, dtype=torch.float64)
    for n in range(2):
        for y in range(h):
            for x in range(w):
                for ky in range(h):
                    for kx in range(w):
                        qv = q[n, y * w + x]
                        r = rel_h[y - ky + h - 1] @ qv + rel_w[x - kx + w - 1] @ qv
                        expected[n, y * w + x, ky * w + kx] = r
    torch.testing.assert_close(bias, expected)


def test_window_partition_pads_and_round_trips() -> None:
    x = torch.randn(2, 5, 7, 4)
    windows, padded_hw = window_partition(x, 3)
    assert padded_hw == (6, 9)
    assert windows.shape == (2 * 2 * 3, 3, 3, 4)
    assert torch.equal(windows[0], x[0, :3, :3])
    assert torch.equal(window_unpartition(windows, 3, padded_hw, (5, 7)), x)


# --- forward shapes ----------------------------------------------------------------------------


def test_tiny_forward_shapes(tiny: SamMed2D) -> None:
    pixels = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        embeddings = tiny.encode_image(pixels)
        assert embeddings.shape == (2, 64, 8, 8)
        single = tiny.decode_text_prompts(embeddings, _text(3), torch.tensor([1, 0, 1]))
        multi = tiny.decode_text_prompts(
            embeddings, _text(3), torch.tensor([1, 0, 1]), multimask_output=True
        )
    assert single.low_res_logits.shape == (3, 1, 32, 32)
    assert single.iou_predictions.shape == (3, 1)
    assert multi.low_res_logits.shape == (3, 3, 32, 32)
    assert multi.iou_predictions.shape == (3, 3)
    assert torch.isfinite(single.low_res_logits).all()
    with pytest.raises(ValueError, match="expects"):
        tiny.encode_image(torch.randn(1, 3, 96, 96))


def test_prompt_encoder_appends_text_after_points_and_boxes(tiny: SamMed2D) -> None:
    pe = tiny.prompt_encoder
    text = _text(2)
    sparse, dense = pe(text_embeds=text)
    assert torch.equal(sparse, text)
    assert torch.equal(dense, pe.no_mask_embed.weight.view(1, 64, 1, 1).expand(2, 64, 8, 8))

    points = (torch.tensor([[[10.0, 20.0]], [[100.0, 5.0]]]), torch.tensor([[1], [0]]))
    boxes = torch.tensor([[0.0, 0.0, 50.0, 60.0], [10.0, 10.0, 20.0, 20.0]])
    masks = torch.randn(2, 1, 32, 32)
    sparse, dense = pe(points=points, boxes=boxes, masks=masks, text_embeds=text)
    assert sparse.shape == (2, 1 + 2 + 1, 64)  # no padding point when a box is present
    assert torch.equal(sparse[:, -1:], text)
    assert dense.shape == (2, 64, 8, 8)
    sparse, _ = pe(points=points)
    assert sparse.shape == (2, 2, 64)  # a "not a point" token is appended
    assert torch.equal(sparse[:, 1], pe.not_a_point_embed.weight.expand(2, 64))
    with pytest.raises(ValueError, match="batch size"):
        pe(boxes=boxes, text_embeds=_text(3))


# --- decoding several prompts over several images ----------------------------------------------


def test_decode_text_prompts_routes_each_prompt_to_its_image(tiny: SamMed2D) -> None:
    with torch.no_grad():
        embeddings = tiny.encode_image(torch.randn(2, 3, 128, 128))
        none = tiny.decode_text_prompts(embeddings, _text(0), torch.zeros(0, dtype=torch.long))
        one = tiny.decode_text_prompts(embeddings, _text(1), torch.tensor([1]))
        text3 = _text(3, seed=7)
        three = tiny.decode_text_prompts(embeddings, text3, torch.tensor([1, 0, 1]))
        alone = [
            tiny.decode_text_prompts(embeddings[j : j + 1], text3[i : i + 1], torch.tensor([0]))
            for i, j in enumerate([1, 0, 1])
        ]
        changed = embeddings.clone()
        changed[0] += 1.0
        three_changed = tiny.decode_text_prompts(changed, text3, torch.tensor([1, 0, 1]))

    assert none.low_res_logits.shape == (0, 1, 32, 32)
    assert none.iou_predictions.shape == (0, 1)
    assert one.low_res_logits.shape == (1, 1, 32, 32)
    for i, out in enumerate(alone):
        torch.testing.assert_close(three.low_res_logits[i : i + 1], out.low_res_logits)
        torch.testing.assert_close(three.iou_predictions[i : i + 1], out.iou_predictions)
    # Prompts 0 and 2 look at image 1 and must not see the change to image 0; prompt 1 must.
    torch.testing.assert_close(three_changed.low_res_logits[[0, 2]], three.low_res_logits[[0, 2]])
    assert not torch.allclose(three_changed.low_res_logits[1], three.low_res_logits[1])

    with pytest.raises(ValueError, match="image_index"):
        tiny.decode_text_prompts(embeddings, _text(2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="image_index"):
        tiny.decode_text_prompts(embeddings, _text(2), torch.tensor([0.0, 1.0]))


# --- pre/post-processing geometry --------------------------------------------------------------


def test_resize_and_centre_offsets() -> None:
    assert resize_longest_side_hw((300, 200), 256) == (256, 171)  # 200*256/300 = 170.67
    assert resize_longest_side_hw((200, 300), 256) == (171, 256)
    assert resize_longest_side_hw((1, 1000), 256) == (1, 256)  # never collapses to 0
    assert centred_pad_offsets((256, 171), 256) == (0, 42)  # 85 px: 42 left, 43 right
    assert centred_pad_offsets((171, 256), 256) == (42, 0)
    with pytest.raises(UserInputError):
        resize_longest_side_hw((0, 10), 256)


@pytest.mark.parametrize("hw", [(300, 200), (200, 300)])
def test_preprocess_centres_the_image_and_pads_with_zeros(tiny: SamMed2D, hw) -> None:
    h, w = hw
    image = np.full((h, w, 3), 40, dtype=np.uint8)
    image[:30, :30] = 220  # marker in the original top-left corner
    out = tiny.preprocess(image)
    assert out.shape == (3, 128, 128) and out.dtype == torch.float32

    h_r, w_r = resize_longest_side_hw((h, w), 128)
    assert max(h_r, w_r) == 128 and min(h_r, w_r) == 85
    top, left = centred_pad_offsets((h_r, w_r), 128)
    assert (top, left) == ((0, 21) if h > w else (21, 0))
    valid = torch.zeros(128, 128, dtype=torch.bool)
    valid[top : top + h_r, left : left + w_r] = True
    assert torch.equal(out[:, ~valid], torch.zeros(3, int((~valid).sum())))

    dark = ((40 - MEAN) / STD).view(3, 1)
    bright = ((220 - MEAN) / STD).view(3, 1)
    torch.testing.assert_close(
        out[:, top + 3 : top + 8, left + 3 : left + 8].reshape(3, -1), bright.expand(3, 25)
    )
    torch.testing.assert_close(
        out[:, top + h_r - 5 : top + h_r, left + w_r - 5 : left + w_r].reshape(3, -1),
        dark.expand(3, 25),
    )


def test_preprocess_rejects_unusable_images(tiny: SamMed2D) -> None:
    with pytest.raises(UserInputError, match="uint8"):
        tiny.preprocess(np.zeros((10, 10, 3), dtype=np.float32))
    with pytest.raises(UserInputError, match="shape"):
        tiny.preprocess(np.zeros((10, 10, 4), dtype=np.uint8))
    grey = tiny.preprocess(np.full((10, 20), 100, dtype=np.uint8))
    torch.testing.assert_close(grey[:, 64, 64], (100 - MEAN) / STD)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / float((a | b).sum())


@pytest.mark.parametrize("hw", [(300, 200), (200, 300)])
def test_postprocess_maps_a_mask_back_onto_the_original_image(tiny: SamMed2D, hw) -> None:
    h, w = hw
    truth = torch.zeros(h, w, dtype=torch.bool)
    truth[60:150, 40:120] = True  # a rectangle in original-pixel coordinates
    # Put the rectangle where the model sees it: resize, centre-pad, then downsample to 32x32.
    h_r, w_r = resize_longest_side_hw((h, w), 128)
    top, left = centred_pad_offsets((h_r, w_r), 128)
    framed = torch.zeros(1, 1, 128, 128)
    resized = torch.nn.functional.interpolate(truth[None, None].float(), (h_r, w_r), mode="area")
    framed[..., top : top + h_r, left : left + w_r] = resized
    low_res = (torch.nn.functional.avg_pool2d(framed, 4) - 0.5) * 20.0  # (1, 1, 32, 32) logits

    out = tiny.postprocess_masks(low_res, input_hw=(h_r, w_r), original_hw=(h, w))
    assert out.shape == (1, 1, h, w)
    assert _iou(out[0, 0] > 0, truth) > 0.9

    # Stretching the padded square onto the image (MedPLIB's released behaviour) misplaces it.
    stretched = torch.nn.functional.interpolate(low_res, (h, w), mode="bilinear")
    assert _iou(stretched[0, 0] > 0, truth) < 0.75


# --- persistence, gradients, precision ---------------------------------------------------------


def test_state_dict_round_trip_is_strict_and_exact(tiny: SamMed2D) -> None:
    buffer = io.BytesIO()
    torch.save(tiny.state_dict(), buffer)
    assert "pixel_mean" not in tiny.state_dict()
    torch.manual_seed(123)
    other = build_sam_med2d(SamMed2DConfig.tiny()).eval()
    pixels, text, index = torch.randn(2, 3, 128, 128), _text(2), torch.tensor([0, 1])
    with torch.no_grad():
        before = tiny.decode_text_prompts(tiny.encode_image(pixels), text, index)
        assert not torch.allclose(
            other.decode_text_prompts(other.encode_image(pixels), text, index).low_res_logits,
            before.low_res_logits,
        )
        buffer.seek(0)
        other.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
        after = other.decode_text_prompts(other.encode_image(pixels), text, index)
    assert torch.equal(after.low_res_logits, before.low_res_logits)
    assert torch.equal(after.iou_predictions, before.iou_predictions)


def test_gradients_reach_decoder_prompt_encoder_and_text_with_frozen_encoder(
    tiny: SamMed2D,
) -> None:
    tiny.image_encoder.requires_grad_(False)
    with torch.no_grad():
        embeddings = tiny.encode_image(torch.randn(2, 3, 128, 128))
    text = _text(3).requires_grad_(True)
    out = tiny.decode_text_prompts(embeddings, text, torch.tensor([0, 1, 1]))
    target = torch.rand(3, 1, 32, 32) > 0.5
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out.low_res_logits, target.float())
    loss.backward()

    assert all(p.grad is None for p in tiny.image_encoder.parameters())
    assert text.grad is not None and text.grad.abs().sum() > 0
    assert tiny.prompt_encoder.no_mask_embed.weight.grad.abs().sum() > 0
    decoder = dict(tiny.mask_decoder.named_parameters())
    for name in (
        "mask_tokens.weight",
        "output_upscaling.0.weight",
        "transformer.layers.0.mlp.lin1.weight",
    ):
        assert decoder[name].grad is not None and decoder[name].grad.abs().sum() > 0, name


def test_runs_under_bf16_autocast_and_in_bf16_weights(tiny: SamMed2D) -> None:
    pixels, index = torch.randn(2, 3, 128, 128), torch.tensor([1, 0])
    with torch.no_grad():
        reference = tiny.decode_text_prompts(tiny.encode_image(pixels), _text(2), index)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = tiny.decode_text_prompts(tiny.encode_image(pixels), _text(2), index)
        bf16 = tiny.to(torch.bfloat16)
        pure = bf16.decode_text_prompts(bf16.encode_image(pixels.bfloat16()), _text(2), index)
        assert torch.equal(bf16.preprocess(np.zeros((4, 4, 3), np.uint8))[:, 64, 64], -MEAN / STD)
    for out in (mixed, pure):
        assert out.low_res_logits.shape == (2, 1, 32, 32)
        assert torch.isfinite(out.low_res_logits.float()).all()
        # Same masks up to bf16 rounding.
        corr = torch.corrcoef(
            torch.stack([out.low_res_logits.float().flatten(), reference.low_res_logits.flatten()])
        )[0, 1]
        assert corr > 0.98
    upsampled = bf16.postprocess_masks(
        pure.low_res_logits, input_hw=(128, 85), original_hw=(30, 20)
    )
    assert upsampled.shape == (2, 1, 30, 20)
    assert math.isfinite(float(upsampled.float().sum()))
