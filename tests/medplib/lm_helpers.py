"""Test helpers shared by the library tests (importable: tests/medplib holds a conftest.py)."""

from __future__ import annotations

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
