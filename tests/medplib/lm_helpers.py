"""Test helpers shared by the library tests (importable: tests/medplib holds a conftest.py)."""

from __future__ import annotations

import numpy as np
import torch


class ScriptedHead(torch.nn.Module):
    """Stand-in LM head that emits a fixed token sequence, one token per call."""

    def __init__(self, script: list[int], vocab_size: int) -> None:
        super().__init__()
        self.script, self.vocab_size, self.calls = list(script), vocab_size, 0

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        tok = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        logits = torch.full((*hidden.shape[:-1], self.vocab_size), -1e4)
        logits[..., tok] = 1e4
        return logits


def prompt_embeds(model, tokenizer, question: str = "Describe the image."):
    """(embeds (1, L, D), token ids (1, L)) of a one-turn prompt about a fixed random image,
    visual tokens spliced in (image positions marked in the ids)."""
    from medplib.conversation import encode_conversation
    from medplib.modeling.batching import clip_and_sam_inputs

    img = np.random.default_rng(3).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    clip = clip_and_sam_inputs(img, model.config)[0]
    _, visual = model.encode_clip(clip[None])
    ids, _ = encode_conversation(tokenizer, [(question, None)])
    embeds, _, token_ids, _ = model.assemble_embeddings(torch.tensor([ids]), None, visual)
    return embeds, token_ids
