"""Teacher-forced validation during training: CE per task, grounding Dice and its control.

Dice is taken at sigmoid > 0.5 (`dice`) and at the official 0.1 (`dice_t01`).

`grounding_dice_other` scores each predicted mask against a *different* structure of the same
image. A model that segments "some organ" whatever the question scores about as well there as
on the asked-for target; a model that reads the question scores much lower.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medplib.data.mecovqa import LoadedSample
from medplib.modeling.batching import collate
from medplib.modeling.medplib import MedPLIBForCausalLM
from medplib.train.data import to_model_sample

THRESHOLD = 0.5  # sigmoid threshold of the hard Dice; the official 0.1 is logged as dice_t01
OFFICIAL_THRESHOLD = 0.1


def hard_dice(
    logits: torch.Tensor, target: np.ndarray | torch.Tensor, threshold: float = THRESHOLD
) -> float:
    """Dice of sigmoid(logits) > threshold against a {0,1} target; both empty → 1."""
    pred = logits.detach().float().sigmoid().cpu() > threshold
    tgt = torch.as_tensor(np.asarray(target)) > 0.5
    total = int(pred.sum()) + int(tgt.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & tgt).sum()) / total


def other_targets(samples: Sequence[LoadedSample]) -> list[np.ndarray | None]:
    """For each grounding sample, the first target of another sample on the same image, if any."""
    by_image: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_image.setdefault(s.sample.image_path, []).append(i)
    out: list[np.ndarray | None] = []
    for i, s in enumerate(samples):
        mine = s.target_masks[0]
        other = None
        for j in by_image[s.sample.image_path]:
            cand = samples[j].target_masks[0]
            if j != i and cand.shape == mine.shape and not np.array_equal(cand, mine):
                other = cand
                break
        out.append(other)
    return out


@torch.no_grad()
def validate(
    model: MedPLIBForCausalLM,
    tokenizer,
    val: dict[str, list[LoadedSample]],
    *,
    batch_size: int,
    device: torch.device,
    max_length: int | None = None,
) -> dict[str, float]:
    """Mean teacher-forced CE per task; Dice and wrong-target Dice for grounding."""
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    for task, samples in val.items():
        if not samples:
            continue
        ce_total, n_total = 0.0, 0
        dices: list[float] = []
        dices_t01: list[float] = []
        others: list[float] = []
        partner = other_targets(samples) if task == "grounding" else [None] * len(samples)
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            batch = collate(
                [to_model_sample(s) for s in chunk], tokenizer, model.config, max_length
            ).to(device)
            out = model(**batch.model_inputs())
            assert out.ce_loss is not None
            ce_total += float(out.ce_loss) * len(chunk)
            n_total += len(chunk)
            seen: dict[int, int] = {}
            for logits, b in zip(out.pred_mask_logits, out.pred_mask_sample_index, strict=True):
                k = seen.get(b, 0)  # k-th <SEG> of sample b
                seen[b] = k + 1
                sample = chunk[b]
                dices.append(hard_dice(logits, sample.target_masks[k]))
                dices_t01.append(hard_dice(logits, sample.target_masks[k], OFFICIAL_THRESHOLD))
                other = partner[start + b]
                if k == 0 and other is not None:
                    others.append(hard_dice(logits, other))
        metrics[f"val_{task}_ce"] = ce_total / max(n_total, 1)
        if dices:
            metrics[f"val_{task}_dice"] = float(np.mean(dices))
            metrics[f"val_{task}_dice_t01"] = float(np.mean(dices_t01))
        if others:
            metrics[f"val_{task}_dice_other"] = float(np.mean(others))
    model.train(was_training)
    return metrics
