"""Learning-rate schedule: linear warm-up, a flat phase, then linear decay (a pure function)."""

from __future__ import annotations

import math


def lr_factor(
    step: int,
    total_steps: int,
    *,
    warmup_fraction: float,
    decay_fraction: float,
    min_ratio: float = 0.0,
) -> float:
    """Multiplier of the peak lr for optimizer step `step` (0-based) of `total_steps`.

    Warm-up rises linearly over ceil(warmup_fraction · total) steps; decay falls linearly towards
    `min_ratio` over the last ceil(decay_fraction · total) steps; in between the lr is flat.
    decay_fraction = 1 reproduces the official WarmupDecayLR (decay right after warm-up).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    warmup = math.ceil(warmup_fraction * total_steps)
    decay = total_steps - warmup if decay_fraction >= 1 else math.ceil(decay_fraction * total_steps)
    decay_start = total_steps - decay
    if step < warmup:
        return (step + 1) / warmup
    if step < decay_start or decay == 0:
        return 1.0
    # The first decay step keeps the full lr, each later one drops by 1 / decay (no wasted step at 0).
    progress = (step - decay_start) / decay
    return 1.0 - (1.0 - min_ratio) * progress
