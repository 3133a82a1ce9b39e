"""Normalisation layers shared by the modules that feed the LLM."""

from __future__ import annotations

from torch import nn


def scaled_rms_norm(width: int, rms: float | None) -> nn.RMSNorm | None:
    """An RMSNorm whose learnable gain starts at `rms` (None: no norm).

    Starting at the LLM's embedding scale puts visual tokens where text tokens are.
    """
    if rms is None:
        return None
    norm = nn.RMSNorm(width, eps=1e-6)
    nn.init.constant_(norm.weight, rms)
    return norm
