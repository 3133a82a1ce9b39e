from __future__ import annotations

import numpy as np
import pytest
import torch

from medplib.modeling.batching import Sample, collate
from medplib.modeling.sam_med2d import SamDecoderOutput
from medplib.tokenization import IGNORE_INDEX, IMAGE_SENTINEL, REGION_SENTINEL


def _image(h=48, w=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _mask(h, w, box):
    m = np.zeros((h, w), np.float32)
    y0, y1, x0, x1 = box
    m[y0:y1, x0:x1] = 1
    return m


def test_forward_shapes_and_expanded_labels(tiny_model, tiny_tokenizer):
    region = _mask(48, 80, (5, 20, 10, 30)).astype(bool)
    samples = [
        Sample(_image(), [("What is at <region>?", "A kidney.")], [region]),
        Sample(_image(30, 30, 1), [("Describe the image.", "A CT slice of the abdomen.")]),
    ]
    batch = collate(samples, tiny_tokenizer, tiny_model.config)
    out = tiny_model(**batch.model_inputs())
    n_vis = tiny_model.config.vision.num_patches
    lengths = batch.attention_mask.sum(1) - 1 + n_vis
    assert out.logits.shape == (2, int(lengths.max()), len(tiny_tokenizer))
    assert out.attention_mask.sum(1).tolist() == lengths.tolist()
    assert int((out.token_ids == IMAGE_SENTINEL).sum()) == 2 * n_vis
    assert int((out.token_ids == REGION_SENTINEL).sum()) == 1
    assert bool((out.labels[out.token_ids < 0] == IGNORE_INDEX).all())
    supervised = [(batch.labels[b] != IGNORE_INDEX).sum().item() for b in range(2)]
    assert [(out.labels[b] != IGNORE_INDEX).sum().item() for b in range(2)] == supervised
    assert len(out.routing) == 4 and out.routing[0].expert_index.shape == out.logits.shape[:2]
    assert out.pred_mask_logits == []


def test_region_feature_is_spliced_between_region_tokens(tiny_model, tiny_tokenizer):
    region = _mask(48, 80, (0, 48, 0, 40)).astype(bool)
    batch = collate(
        [Sample(_image(), [("Look at <region> now", "ok")], [region])],
        tiny_tokenizer,
        tiny_model.config,
    )
    patches, visual = tiny_model.encode_clip(batch.clip_pixels)
    feats = tiny_model.encode_regions(patches, batch.region_weights)
    embeds, _, token_ids, _ = tiny_model.assemble_embeddings(
        batch.input_ids, batch.attention_mask, visual, feats
    )
    pos = int(torch.nonzero(token_ids[0] == REGION_SENTINEL))
    torch.testing.assert_close(embeds[0, pos], feats[0][0])
    w = batch.region_weights[0][0]
    by_hand = (w[:, None] * tiny_model.region_encoder.adapter(patches[0])).sum(0) / w.sum()
    # The tiny preset RMS-normalises the pooled feature (its shape embedding starts at zero).
    gain = tiny_model.config.region.output_rms
    by_hand = gain * by_hand / by_hand.square().mean().add(1e-6).sqrt()
    torch.testing.assert_close(feats[0][0], by_hand, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n_seg", [0, 1, 3])
def test_each_seg_token_yields_a_mask_from_the_preceding_state(tiny_model, tiny_tokenizer, n_seg):
    h, w = 40, 70
    answer = "The liver" + " and <SEG>" * n_seg + "."
    targets = [_mask(h, w, (5 + i, 20 + i, 10, 40)) for i in range(n_seg)]
    batch = collate(
        [Sample(_image(h, w), [("Segment the liver", answer)], (), targets)],
        tiny_tokenizer,
        tiny_model.config,
    )
    out = tiny_model(**batch.model_inputs())
    assert len(out.pred_mask_logits) == n_seg
    assert out.pred_mask_sample_index == [0] * n_seg
    seg_pos = torch.nonzero(out.token_ids[0] == tiny_model.seg_token_id).squeeze(-1)
    assert seg_pos.numel() == n_seg
    if n_seg:
        sam_emb = tiny_model.encode_sam(batch.sam_pixels)
        hidden = out.last_hidden_state[0, seg_pos - 1]  # the state that predicts <SEG>
        expected, _ = tiny_model.decode_masks(
            hidden,
            sam_emb,
            torch.zeros(n_seg, dtype=torch.long),
            batch.sam_input_hw * n_seg,
            [(h, w)] * n_seg,
        )
        for got, want in zip(out.pred_mask_logits, expected, strict=True):
            assert got.shape == (h, w)
            torch.testing.assert_close(got, want)
        assert out.bce_loss is not None and out.bce_loss.item() > 0
    else:
        assert out.bce_loss is not None and out.bce_loss.item() == 0.0


def test_only_images_with_a_seg_are_encoded_and_masks_match_the_whole_batch(
    tiny_model, tiny_tokenizer
):
    tiny_model.eval()
    samples = [
        Sample(
            _image(40, 40, 3),
            [("Segment both kidneys", "Left <SEG> and right <SEG>.")],
            (),
            [_mask(40, 40, (5, 30, 2, 15)), _mask(40, 40, (5, 30, 25, 38))],
        ),
        Sample(_image(50, 30, 4), [("What is this?", "A lesion.")]),
        Sample(
            _image(36, 60, 5),
            [("Segment the liver", "Liver: <SEG>")],
            (),
            [_mask(36, 60, (2, 20, 5, 50))],
        ),
    ]
    batch = collate(samples, tiny_tokenizer, tiny_model.config)
    seen: list[int] = []
    hook = tiny_model.sam.image_encoder.register_forward_hook(
        lambda _m, args, _out: seen.append(int(args[0].shape[0]))
    )
    try:
        with torch.no_grad():
            out = tiny_model(**batch.model_inputs())
    finally:
        hook.remove()
    assert seen == [2]  # samples 0 and 2; the VQA sample in between is not encoded
    assert out.pred_mask_sample_index == [0, 0, 2]

    with torch.no_grad():
        all_emb = tiny_model.encode_sam(batch.sam_pixels)  # every image, (3, C, h, w)
        seg_pos = torch.nonzero(out.token_ids == tiny_model.seg_token_id)
        index = seg_pos[:, 0]
        expected, _ = tiny_model.decode_masks(
            out.last_hidden_state[index, seg_pos[:, 1] - 1],
            all_emb,
            index,
            [batch.sam_input_hw[int(b)] for b in index],
            [tuple(t.shape) for s in samples for t in s.target_masks],
        )
    assert [tuple(m.shape) for m in out.pred_mask_logits] == [(40, 40), (40, 40), (36, 60)]
    for got, want in zip(out.pred_mask_logits, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_training_loss_is_the_weighted_sum_and_reaches_every_trained_part(
    tiny_model, tiny_tokenizer
):
    tiny_model.train()
    tiny_model.config.moe.router_aux_loss_coef = 0.01
    region = _mask(40, 40, (0, 10, 0, 10)).astype(bool)
    samples = [
        Sample(
            _image(40, 40),
            [("Segment the kidney near <region>", "Kidney: <SEG>")],
            [region],
            [_mask(40, 40, (5, 30, 5, 30))],
        ),
        Sample(_image(50, 30, 2), [("What is this?", "A lesion.")]),
    ]
    out = tiny_model(**collate(samples, tiny_tokenizer, tiny_model.config).model_inputs())
    lw = tiny_model.config.losses
    expected = (
        lw.ce_weight * out.ce_loss
        + lw.bce_weight * out.bce_loss
        + lw.dice_weight * out.dice_loss
        + lw.focal_weight * out.focal_loss
        + 0.01 * out.aux_loss
    )
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    m = tiny_model
    router = m.language_model.model.layers[0].mlp.router.weight
    for name, p in [
        ("seg_head", m.seg_head.net[0].weight),
        ("mask_decoder", next(m.sam.mask_decoder.parameters())),
        ("region adapter", m.region_encoder.adapter.weight),
        ("projector", m.projector.net[0].weight),
        ("router", router),
    ]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_target_count_must_match_seg_tokens(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="2 <SEG> tokens but 1 target"):
        collate(
            [Sample(_image(), [("q", "<SEG> <SEG>")], (), [_mask(48, 80, (0, 5, 0, 5))])],
            tiny_tokenizer,
            tiny_model.config,
        )


def _stub_decoder(model, low_res: torch.Tensor):
    """Replace SAM's mask decoding with fixed low-res logits (N copies)."""

    def decode(image_embeddings, text_embeds, image_index, multimask_output=False):
        n = text_embeds.shape[0]
        return SamDecoderOutput(
            low_res.expand(n, 1, *low_res.shape[-2:]).clone(), torch.zeros(n, 1)
        )

    model.sam.decode_text_prompts = decode


def test_non_square_masks_are_unpadded_not_stretched(tiny_model):
    s = tiny_model.sam.img_size  # 128 px tiny SAM; low-res logits are s / 4
    lr = s // 4
    h, w = 64, 128  # resized 64 x 128, padded 32 rows above and below
    valid = torch.full((1, 1, lr, lr), -10.0)
    valid[..., lr // 4 : lr // 4 + lr // 4, :] = 10.0  # top half of the valid (un-padded) band
    _stub_decoder(tiny_model, valid)
    masks, _ = tiny_model.decode_masks(
        torch.zeros(1, 256),
        torch.zeros(1, 1, 8, 8),
        torch.zeros(1, dtype=torch.long),
        [(64, 128)],
        [(h, w)],
    )
    binary = masks[0] > 0
    assert binary.shape == (h, w)
    rows = binary.float().mean(dim=1)
    assert bool((rows[:31] == 1).all()) and bool((rows[33:] == 0).all())  # boundary at row 32 of 64
