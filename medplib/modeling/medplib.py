"""MedPLIBForCausalLM: composes the vision tower, projector, region encoder, MoE LLaMA,
[SEG] head and SAM-Med2D pixel decoder.

Forward pass (one image per sample):

1. CLIP patches (B, N, C) → projector → visual tokens (B, N, D) replacing the `<image>` sentinel.
2. CLIP patches → region adapter → one (D,) feature per region replacing each region sentinel.
3. LLaMA over the assembled embeddings → post-norm hidden states → LM head logits.
4. For every `<SEG>` in the sequence, the hidden state *preceding* it (the one that predicts
   it) → [SEG] head → SAM prompt → mask logits, un-padded to the original image size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medplib.modeling.configuration import MedPLIBConfig
from medplib.modeling.language_model import build_language_model, collect_routing
from medplib.modeling.losses import causal_lm_loss, mask_losses, total_loss
from medplib.modeling.outputs import MedPLIBOutput
from medplib.modeling.projector import MultimodalProjector
from medplib.modeling.region_encoder import RegionEncoder
from medplib.modeling.sam_med2d import SamMed2D, SamMed2DConfig, build_sam_med2d
from medplib.modeling.seg_head import SegHead
from medplib.modeling.vision_tower import CLIPVisionTower
from medplib.tokenization import IGNORE_INDEX, IMAGE_SENTINEL, REGION_SENTINEL

HW = tuple[int, int]


def _hw(size: Sequence[int]) -> HW:
    return int(size[0]), int(size[1])


class MedPLIBForCausalLM(nn.Module):
    """The MedPLIB model. Stateless: image caching and decoding loops live in the predictor."""

    def __init__(self, config: MedPLIBConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.vision_tower = CLIPVisionTower(config.vision)
        self.projector = MultimodalProjector(config.projector)
        self.region_encoder = RegionEncoder(config.region)
        self.language_model = build_language_model(config.language, config.moe)
        self.seg_head = SegHead(config.seg_head)
        self.sam: SamMed2D = build_sam_med2d(SamMed2DConfig.from_dict(config.sam))

    # ----------------------------------------------------------------------------------- helpers
    @property
    def device(self) -> torch.device:
        return next(self.language_model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.language_model.parameters()).dtype

    @property
    def seg_token_id(self) -> int:
        if self.config.seg_token_id is None:
            raise ValueError("config.seg_token_id is unset; build the model with its tokenizer")
        return self.config.seg_token_id

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """(…,) ids ≥ 0 → (…, D) input embeddings."""
        return self.language_model.get_input_embeddings()(ids)

    def encode_clip(self, clip_pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) → raw CLIP patches (B, N, C) and visual token embeddings (B, N, D)."""
        patches = self.vision_tower(clip_pixels.to(self.device))
        return patches, self.projector(patches)

    def encode_sam(self, sam_pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S', S') SAM-normalised pixels → (B, C, h, w) image embeddings."""
        param = next(self.sam.image_encoder.parameters())
        return self.sam.encode_image(sam_pixels.to(device=param.device, dtype=param.dtype))

    def encode_regions(
        self, patches: torch.Tensor, region_weights: Sequence[torch.Tensor | None] | None
    ) -> list[torch.Tensor]:
        """Per sample (R_b, D) region features from patches (B, N, C) and coverage weights (R_b, N)."""
        out = []
        for b in range(patches.shape[0]):
            w = None if region_weights is None else region_weights[b]
            if w is None or w.numel() == 0:
                out.append(
                    patches.new_zeros((0, self.config.region.out_features), dtype=self.dtype)
                )
            else:
                out.append(self.region_encoder(patches[b], w.to(patches.device)))
        return out

    def assemble_embeddings(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        image_embeds: torch.Tensor | None,
        region_feats: Sequence[torch.Tensor] | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Splice visual tokens and region features into the text embeddings.

        input_ids (B, T) hold text ids, at most one IMAGE_SENTINEL and one REGION_SENTINEL per
        region; attention_mask (B, T) marks real tokens (right padding). Returns, in the
        expanded layout of length L: inputs_embeds (B, L, D), attention_mask (B, L),
        token_ids (B, L) (sentinels kept at image / region slots) and labels (B, L) or None.
        """
        dev = self.device
        input_ids = input_ids.to(dev)
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(dev)
        seqs, ids_out, labs_out = [], [], []
        for b in range(input_ids.shape[0]):
            keep = mask[b].bool()
            ids = input_ids[b][keep]  # (T_b,)
            lab = labels[b].to(dev)[keep] if labels is not None else None
            emb = self.embed_tokens(ids.clamp(min=0))  # (T_b, D)
            region_pos = torch.nonzero(ids == REGION_SENTINEL).squeeze(-1)
            feats = region_feats[b] if region_feats is not None else None
            n_feats = 0 if feats is None else feats.shape[0]
            if region_pos.numel() != n_feats:
                raise ValueError(
                    f"sample {b} has {region_pos.numel()} region slots but {n_feats} region features"
                )
            if n_feats:
                assert feats is not None
                emb = emb.index_copy(0, region_pos, feats.to(emb.dtype))
            if lab is not None:
                lab = lab.masked_fill(ids < 0, IGNORE_INDEX)
            image_pos = torch.nonzero(ids == IMAGE_SENTINEL).squeeze(-1)
            if image_pos.numel() > 1:
                raise ValueError(
                    f"sample {b} has {image_pos.numel()} <image> placeholders; only one is supported"
                )
            if image_pos.numel() == 1:
                if image_embeds is None:
                    raise ValueError(
                        f"sample {b} has an <image> placeholder but no image was given"
                    )
                p = int(image_pos)
                vis = image_embeds[b].to(emb.dtype)  # (N, D)
                n = vis.shape[0]
                emb = torch.cat([emb[:p], vis, emb[p + 1 :]])
                ids = torch.cat([ids[:p], ids.new_full((n,), IMAGE_SENTINEL), ids[p + 1 :]])
                if lab is not None:
                    lab = torch.cat([lab[:p], lab.new_full((n,), IGNORE_INDEX), lab[p + 1 :]])
            seqs.append(emb)
            ids_out.append(ids)
            labs_out.append(lab)
        length = max(s.shape[0] for s in seqs)
        bsz, d = len(seqs), seqs[0].shape[-1]
        pad_id = int(self.language_model.config.pad_token_id or 0)
        embeds = seqs[0].new_zeros((bsz, length, d))
        attn = torch.zeros((bsz, length), dtype=torch.long, device=dev)
        token_ids = torch.full((bsz, length), pad_id, dtype=torch.long, device=dev)
        out_labels = (
            torch.full((bsz, length), IGNORE_INDEX, dtype=torch.long, device=dev)
            if labels is not None
            else None
        )
        for b, (emb, ids, lab) in enumerate(zip(seqs, ids_out, labs_out, strict=True)):
            n = emb.shape[0]
            embeds[b, :n], attn[b, :n], token_ids[b, :n] = emb, 1, ids
            if out_labels is not None and lab is not None:
                out_labels[b, :n] = lab
        return embeds, attn, token_ids, out_labels

    def seg_prompt_positions(
        self, token_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """(M, 2) [sample, position] of the hidden states that predict each `<SEG>`, in reading order."""
        nxt = (token_ids[:, 1:] == self.seg_token_id) & attention_mask[:, 1:].bool()  # (B, L-1)
        return torch.nonzero(nxt)  # position t predicts token t + 1

    def decode_masks(
        self,
        seg_hidden: torch.Tensor,
        sam_embeddings: torch.Tensor,
        image_index: torch.Tensor,
        input_hw: Sequence[HW],
        output_hw: Sequence[HW],
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """seg_hidden (M, D) → M mask logits, each (H_i, W_i) = output_hw[i], and IoU estimates (M,).

        `input_hw[i]` is the resized (un-padded) SAM input size of the image of mask i.
        """
        if seg_hidden.shape[0] == 0:
            return [], seg_hidden.new_zeros((0,))
        prompts = self.seg_head(seg_hidden)  # (M, P)
        sam_dtype = next(self.sam.mask_decoder.parameters()).dtype
        low_res, iou = self.sam.decode_text_prompts(
            sam_embeddings,
            prompts[:, None, :].to(sam_dtype),
            image_index.to(sam_embeddings.device).long(),
        )  # (M, 1, 4h, 4w), (M, 1)
        masks = []
        for i in range(low_res.shape[0]):
            up = self.sam.postprocess_masks(
                low_res[i : i + 1].float(),
                input_hw=_hw(input_hw[i]),
                original_hw=_hw(output_hw[i]),
            )  # (1, 1, H, W)
            masks.append(up[0, 0])
        return masks, iou[:, 0].float()

    # ----------------------------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        clip_pixels: torch.Tensor | None = None,
        sam_pixels: torch.Tensor | None = None,
        region_weights: Sequence[torch.Tensor | None] | None = None,
        sam_input_hw: Sequence[HW] | None = None,
        original_hw: Sequence[HW] | None = None,
        target_masks: Sequence[Sequence[torch.Tensor]] | None = None,
    ) -> MedPLIBOutput:
        """Teacher-forced forward with optional losses.

        Arguments:
          input_ids: (B, T) ids with IMAGE/REGION sentinels, right-padded (see `medplib.modeling.batching`).
          attention_mask: (B, T) 1 for real tokens.
          labels: (B, T) LLaVA-v1 labels; enables the CE loss.
          clip_pixels: (B, 3, S, S) CLIP input; sam_pixels: (B, 3, S', S') SAM input.
          region_weights: per sample (R_b, N) patch coverage of each region, or None.
          sam_input_hw / original_hw: per sample resized SAM size and original (H, W).
          target_masks: per sample, one {0,1} (H, W) mask per `<SEG>` in its sequence; enables
            the mask losses, computed at each target's resolution.
        """
        patches = image_embeds = None
        if clip_pixels is not None:
            patches, image_embeds = self.encode_clip(clip_pixels)
        region_feats = None
        if region_weights is not None and any(w is not None and w.numel() for w in region_weights):
            if patches is None:
                raise ValueError("region prompts need the image (clip_pixels)")
            region_feats = self.encode_regions(patches, region_weights)
        embeds, attn, token_ids, exp_labels = self.assemble_embeddings(
            input_ids, attention_mask, image_embeds, region_feats, labels
        )
        lm_out = self.language_model.model(
            inputs_embeds=embeds, attention_mask=attn, use_cache=False
        )
        hidden = lm_out.last_hidden_state  # (B, L, D), post final norm
        logits = self.language_model.lm_head(hidden)  # (B, L, V)
        routing = collect_routing(self.language_model)
        out = MedPLIBOutput(
            logits=logits,
            last_hidden_state=hidden,
            attention_mask=attn,
            labels=exp_labels,
            token_ids=token_ids,
            routing=routing,
        )
        aux = (
            torch.stack([r.aux_loss for r in routing]).sum()
            if routing
            else hidden.new_zeros((), dtype=torch.float32)
        )
        out.aux_loss = aux

        if self.config.seg_token_id is not None and sam_pixels is not None:
            pos = self.seg_prompt_positions(token_ids, attn)  # (M, 2)
            if pos.shape[0]:
                if sam_input_hw is None or (original_hw is None and target_masks is None):
                    raise ValueError(
                        "decoding <SEG> masks needs sam_input_hw and original_hw (or target_masks)"
                    )
                per_sample = torch.bincount(pos[:, 0], minlength=token_ids.shape[0]).tolist()
                if target_masks is not None:
                    for b, n in enumerate(per_sample):
                        if n != len(target_masks[b]):
                            raise ValueError(
                                f"sample {b} has {n} <SEG> tokens but {len(target_masks[b])} target masks"
                            )
                flat_targets = [t for masks in (target_masks or []) for t in masks]
                sample_idx = pos[:, 0]
                in_hw = [_hw(sam_input_hw[int(b)]) for b in sample_idx.tolist()]
                if target_masks is not None:
                    out_hw = [_hw(t.shape[-2:]) for t in flat_targets]
                else:
                    assert original_hw is not None
                    out_hw = [_hw(original_hw[int(b)]) for b in sample_idx.tolist()]
                # Only the images that hold a <SEG> go through the SAM encoder: in a batch
                # mixing VQA and grounding most samples have none, and their embeddings
                # (and, when SAM trains, their backward pass) would be computed for nothing.
                with_seg = torch.unique(sample_idx)  # (U,) sorted sample numbers
                sam_emb = self.encode_sam(sam_pixels[with_seg.to(sam_pixels.device)])
                masks, iou = self.decode_masks(
                    hidden[pos[:, 0], pos[:, 1]],
                    sam_emb,
                    torch.searchsorted(with_seg, sample_idx),  # (M,) rows of sam_emb
                    in_hw,
                    out_hw,
                )
                out.pred_mask_logits = masks
                out.pred_mask_sample_index = sample_idx.tolist()
                out.pred_iou = list(iou.unbind(0))

        if exp_labels is not None:
            ce = causal_lm_loss(logits, exp_labels, self.config.losses.ce_reduction)
            targets = [t.to(ce.device) for masks in (target_masks or []) for t in masks]
            preds = out.pred_mask_logits if target_masks is not None else []
            mloss = mask_losses(preds, targets, self.config.losses)
            mloss = {k: v.to(ce.device) for k, v in mloss.items()}
            out.ce_loss, out.bce_loss, out.dice_loss, out.focal_loss = (
                ce,
                mloss["bce"],
                mloss["dice"],
                mloss["focal"],
            )
            out.loss = total_loss(
                ce, mloss, aux, self.config.losses, self.config.moe.router_aux_loss_coef
            )
        return out
