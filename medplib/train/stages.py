"""What each stage starts from, what it trains, and the losses of one micro-batch.

| stage     | starts from                          | data                  | trained by default (tiny)          |
|-----------|--------------------------------------|-----------------------|------------------------------------|
| align     | the preset, random; a new tokenizer  | VQA + region +        | everything: CLIP, projector, LLM,  |
|           |                                      | grounding; grounding  | region adapter, [SEG] head,        |
|           |                                      | masks (SAM prompts)   | SAM-Med2D                          |
| vl        | `--init` (align output)              | VQA + region          | LLM, projector, region adapter     |
| grounding | `--init` (vl output)                 | grounding             | LLM FFNs, [SEG] head, mask decoder |
| moe       | `--experts VL GROUNDING`, assembled, | all three             | router, FFN experts, q/v, heads …  |
|           | or `--init MOE` (fine-tune further)  |                       |                                    |

grounding leaves attention, norms, embeddings, LM head, projector and region adapter exactly
as the vl stage left them, so `medplib.experts` can take every shared weight from the VL model
and only stack the two FFN sets as experts.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from medplib.checkpoint import build_model, load_pretrained
from medplib.errors import UserInputError
from medplib.experts import assemble_moe
from medplib.modeling.configuration import INFERENCE_SETTINGS
from medplib.modeling.losses import dice_loss, mask_bce_loss
from medplib.modeling.medplib import MedPLIBForCausalLM
from medplib.modeling.presets import build_config, with_sam_patch_size
from medplib.tokenization import IGNORE_INDEX
from medplib.train.config import LoraSection, TrainConfig
from medplib.train.data import SamBatch

_LLM_LAYERS = r"language_model\.model\.layers\.\d+\."


def build_stage_model(
    config: TrainConfig,
    tokenizer: PreTrainedTokenizerBase | None = None,
    init_dir: Path | None = None,
    experts: tuple[Path, Path] | None = None,
) -> tuple[MedPLIBForCausalLM, PreTrainedTokenizerBase]:
    """The model a stage trains (fp32, CPU, train mode) and its tokenizer."""
    if config.stage == "align":
        if tokenizer is None:
            raise ValueError("align needs the freshly trained tokenizer")
        model_config = build_config(config.model.preset)
        if config.model.sam_patch_size is not None:
            model_config = with_sam_patch_size(model_config, config.model.sam_patch_size)
        model = build_model(model_config, tokenizer, seed=config.seed)
    elif config.stage in ("vl", "grounding"):
        assert init_dir is not None
        model, tokenizer, _ = load_pretrained(init_dir, device="cpu", dtype=torch.float32)
    elif experts is not None:
        vl_model, tokenizer, _ = load_pretrained(experts[0], device="cpu", dtype=torch.float32)
        model = assemble_moe(vl_model, experts[1], moe=config.moe_config(), seed=config.seed)
    else:
        assert init_dir is not None
        model, tokenizer, _ = load_pretrained(init_dir, device="cpu", dtype=torch.float32)
        # Capacity and loss settings the config names apply to this run; the mixture's shape
        # stays the checkpoint's (preflight refuses a config that would change it). Set in
        # place: every MoE layer holds this same MoEConfig object.
        for key, value in config.model.moe.items():
            setattr(model.config.moe, key, value)
    model.config.losses = config.losses
    model.config.name = config.model.name or f"{config.model.preset}-{config.stage}"
    for name in INFERENCE_SETTINGS:  # unset (None) keeps the input checkpoint's value
        if getattr(config.model, name) is not None:
            setattr(model.config, name, getattr(config.model, name))
    return model.train(), tokenizer


def lora_regex(lora: LoraSection) -> str:
    """Full-name regex of the LLM Linear layers LoRA adapts (dense and expert FFNs alike)."""
    names = "|".join(re.escape(n) for n in lora.target_modules)
    return rf"^{_LLM_LAYERS}(?:.*\.)?(?:{names})$"


def configure_trainable(
    model: MedPLIBForCausalLM, patterns: list[str], lora: LoraSection | None, seed: int
) -> object | None:
    """Freeze everything, add LoRA adapters if asked, then unfreeze `patterns`.

    Returns the peft `LoraModel` (needed to merge the adapters at the end) or None.
    A pattern that matches no parameter is an error: it is almost always a typo.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    lora_model = None
    if lora is not None:
        import peft

        torch.manual_seed(seed)  # LoRA A matrices are random
        lcfg = peft.LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora_regex(lora),
            bias="none",
        )
        lora_model = peft.LoraModel(model, lcfg, "default")
        if not any("lora_" in n for n, _ in model.named_parameters()):
            raise UserInputError(
                f"lora.target_modules {lora.target_modules} match no language-model layer; "
                "use names like q_proj, v_proj, gate_proj, up_proj, down_proj."
            )
    names = [n for n, _ in model.named_parameters()]
    params = dict(model.named_parameters())
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise UserInputError(
                f"train_modules pattern {pattern!r} matches no parameter; "
                "patterns are globs over names like language_model.model.layers.0.mlp.up_proj.weight."
            )
        for n in hits:
            if ".base_layer." not in n:  # a LoRA-adapted layer trains through its adapter
                params[n].requires_grad_(True)
    return lora_model


def trainable_summary(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters": total, "trainable": trainable}


def merge_lora(model: MedPLIBForCausalLM, lora_model: object | None) -> MedPLIBForCausalLM:
    """Fold LoRA adapters into the base weights (the checkpoint layout has no adapters)."""
    if lora_model is None:
        return model
    merged = lora_model.merge_and_unload()  # type: ignore[attr-defined]
    assert isinstance(merged, MedPLIBForCausalLM)
    return merged


def full_text_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) labels supervising every real text token (language-model pretraining)."""
    labels = input_ids.masked_fill((input_ids < 0) | (attention_mask == 0), IGNORE_INDEX)
    labels[:, 0] = IGNORE_INDEX  # BOS is never predicted
    return labels


def sam_prompt_loss(model: MedPLIBForCausalLM, batch: SamBatch) -> torch.Tensor:
    """BCE + Dice of SAM-Med2D's masks for box / point prompts, at the targets' resolution."""
    sam = model.sam
    emb = sam.encode_image(batch.sam_pixels)  # (B, C, h, w)
    losses = []
    for use_box in (True, False):
        rows = torch.nonzero(batch.use_box == use_box).squeeze(-1)  # (n,)
        if rows.numel() == 0:
            continue
        if use_box:
            sparse, dense = sam.prompt_encoder(boxes=batch.boxes_xyxy_px[rows])
        else:
            pts = batch.points_xy_px[rows]  # (n, 1, 2)
            labels = torch.ones(pts.shape[:2], dtype=torch.long, device=pts.device)
            sparse, dense = sam.prompt_encoder(points=(pts, labels))
        low_res, _ = sam.mask_decoder(
            image_embeddings=emb[rows],
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )  # (n, 1, 4h, 4w)
        for j, r in enumerate(rows.tolist()):
            target = batch.target_masks[r]
            logits = sam.postprocess_masks(
                low_res[j : j + 1].float(),
                input_hw=batch.input_hw[r],
                original_hw=(int(target.shape[0]), int(target.shape[1])),
            )[0, 0]
            losses.append(mask_bce_loss(logits, target) + dice_loss(logits, target))
    return torch.stack(losses).mean()


def micro_batch_losses(
    model: MedPLIBForCausalLM, batch: dict, config: TrainConfig
) -> dict[str, torch.Tensor]:
    """Weighted total ("loss") and its parts for one micro-batch of the stage."""
    lm = batch["lm"]
    inputs = lm.model_inputs()
    if config.stage == "align" and config.align.lm_full_text:
        inputs["labels"] = full_text_labels(lm.input_ids, lm.attention_mask)
    out = model(**inputs)
    assert out.loss is not None and out.ce_loss is not None
    parts = {
        "loss": out.loss,
        "ce": out.ce_loss.detach(),
    }
    if any(len(m) for m in lm.target_masks):
        assert out.bce_loss is not None and out.dice_loss is not None
        assert out.focal_loss is not None
        parts.update(
            bce=out.bce_loss.detach(), dice=out.dice_loss.detach(), focal=out.focal_loss.detach()
        )
    if model.config.moe.is_moe and out.aux_loss is not None:
        parts["aux"] = out.aux_loss.detach()
    if "sam" in batch:
        sam = sam_prompt_loss(model, batch["sam"])
        parts["loss"] = parts["loss"] + config.align.sam_weight * sam
        parts["sam"] = sam.detach()
    return parts
