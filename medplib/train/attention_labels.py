"""Attention labels: teach one language-model head to look where the question points.

"Is the polyp on the left or the right?" needs two steps: find the visual tokens of the
structure the question names, then read where they are. Trained on answers alone, the tiny
preset never learned the first step: on endoscopy, fundus, ultrasound and dermoscopy scenes,
where a finding can lie anywhere, its side and height answers stayed at chance (val 0.40–0.52)
while fixed anatomy (CT, MR, X-ray) was answered from where organs usually lie (≥ 0.84). More
side questions and a position code on the visual tokens did not change that.

This objective supervises the attention of one head, at the position that predicts the first
answer token, over the visual tokens: the target is the structures the question names, spread
over the CLIP patches by how much of each they cover (the corpus's exact masks, the same
coverage as `patch_labels`). Questions that name no structure of their image (descriptions,
"Is there a cyst?" when there is none, region questions without a name) get no target. It is a
training-only loss; the checkpoint holds no extra weights.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F
from transformers.models.llama.modeling_llama import LlamaAttention, apply_rotary_pos_emb

from medplib.tokenization import IGNORE_INDEX, IMAGE_SENTINEL


def named_columns(question: str, names: Sequence[str], present: Sequence[bool]) -> list[int]:
    """Columns of the structures `question` names, longest names first, among `present` ones.

    A name inside a longer matched one does not count again ("left kidney" is not also
    "kidney"); matching is on whole words, case-insensitive.
    """
    text = question.lower()
    taken = np.zeros(len(text) + 1, dtype=bool)
    found = []
    for col in sorted(range(len(names)), key=lambda c: -len(names[c])):
        if not present[col] or not names[col]:
            continue
        pattern = r"\b" + re.escape(names[col].lower()) + r"\b"
        for m in re.finditer(pattern, text):
            if not taken[m.start() : m.end()].any():
                taken[m.start() : m.end()] = True
                found.append(col)
                break
    return sorted(found)


def attention_target(coverage: np.ndarray, columns: Sequence[int]) -> np.ndarray:
    """(N,) float32 summing to 1 over the patches the `columns` cover, or all zeros.

    coverage: (N, K) fraction of each patch each class covers (`patch_labels.coverage_targets`).
    """
    if not len(columns):
        return np.zeros(coverage.shape[0], dtype=np.float32)
    weights = coverage[:, list(columns)].sum(axis=1)  # (N,)
    total = float(weights.sum())
    if total <= 0:
        return np.zeros(coverage.shape[0], dtype=np.float32)
    return (weights / total).astype(np.float32)


def answer_query_positions(labels: torch.Tensor) -> torch.Tensor:
    """(B,) position whose logits predict each sample's first answer token; -1 if none.

    labels: (B, L) expanded-layout labels (IGNORE_INDEX on prompt and padding).
    """
    supervised = labels != IGNORE_INDEX  # (B, L)
    first = supervised.float().argmax(dim=1)  # (B,)
    return torch.where(supervised.any(dim=1), first - 1, torch.full_like(first, -1))


def head_attention_logprobs(
    attention: LlamaAttention,
    hidden_states: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    query_positions: torch.Tensor,
    head: int,
) -> torch.Tensor:
    """(B, L) log attention of `head` at each sample's query position over every key.

    Keys after the query get -inf (causal). Recomputes the head's scores from the layer's
    input, with the module's own projections, rotary embedding and scaling, so gradients
    reach everything that shaped them.
    hidden_states: (B, L, D), the normed input of the attention module.
    """
    b, length, _ = hidden_states.shape
    head_dim = attention.head_dim
    groups = attention.num_key_value_groups  # query heads sharing one key head
    kv_heads = attention.config.num_attention_heads // groups
    kv_head = head // groups
    rows = torch.arange(b, device=hidden_states.device)
    q_in = hidden_states[rows, query_positions.clamp(min=0)]  # (B, D)
    q = attention.q_proj(q_in).view(b, -1, head_dim)[:, head]  # (B, d)
    k = attention.k_proj(hidden_states).view(b, length, kv_heads, head_dim)[:, :, kv_head]
    cos, sin = (t.expand(b, -1, -1) for t in position_embeddings)  # (B, L, d); given (1, L, d)
    qpos = query_positions.clamp(min=0)
    q_cos, q_sin = cos[rows, qpos][:, None], sin[rows, qpos][:, None]  # (B, 1, d)
    q_rot, _ = apply_rotary_pos_emb(q[:, None, None], q[:, None, None], q_cos, q_sin)
    _, k_rot = apply_rotary_pos_emb(k[:, None], k[:, None], cos, sin)  # (B, 1, L, d)
    q_rot = q_rot.reshape(b, head_dim, 1)  # (B, d, 1)
    scores = (k_rot[:, 0] @ q_rot).squeeze(-1) * attention.scaling  # (B, L)
    keys = torch.arange(length, device=hidden_states.device)
    scores = scores.float().masked_fill(keys[None, :] > qpos[:, None], float("-inf"))
    return F.log_softmax(scores, dim=-1)


def attention_label_loss(
    logprobs: torch.Tensor, token_ids: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy between each target and the head's attention on the visual tokens.

    logprobs: (B, L) from `head_attention_logprobs`; token_ids: (B, L) expanded ids, with
    IMAGE_SENTINEL at the N visual tokens; targets: (B, N), rows summing to 1 or all zeros
    (no target: the sample does not count, nor does one whose query precedes its image).
    Returns the mean over samples with a target (0 when none has one).
    """
    visual = token_ids == IMAGE_SENTINEL  # (B, L)
    # A row counts if it has a target, its N visual tokens, and a query that can see them
    # (a sample without an answer has no query: its visual log-probabilities are -inf).
    visible = (torch.isfinite(logprobs) | ~visual).all(dim=1)
    has = (targets.sum(dim=1) > 0) & (visual.sum(dim=1) == targets.shape[1]) & visible
    if not bool(has.any()):
        return logprobs.new_zeros(())
    picked = logprobs[has][visual[has]].view(-1, targets.shape[1])  # (B', N)
    return -(targets[has].to(picked.dtype) * picked).sum(dim=1).mean()
