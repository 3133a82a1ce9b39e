"""Vectorised 2-D shape and texture primitives for the synthetic scenes.

Coordinates are normalised: ``y`` and ``x`` run from -1 (top / left edge) to +1 (bottom / right)
over the pixel centres, so one scene description renders at any image size.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw


@lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (y, x) coordinates of the pixel centres, each (size, size) float32."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def _local(size: int, cy: float, cx: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = grid(size)
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    return -dx * s + dy * c, dx * c + dy * s  # (v, u): v along the rotated y axis


def ellipse(
    size: int, cy: float, cx: float, ry: float, rx: float, angle: float = 0.0
) -> np.ndarray:
    """Bool (size, size) filled ellipse with semi-axes ry, rx rotated by `angle` radians."""
    v, u = _local(size, cy, cx, angle)
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def blob(
    size: int,
    rng: np.random.Generator,
    cy: float,
    cx: float,
    r: float,
    *,
    irregularity: float = 0.15,
    aspect: float = 1.0,
    angle: float = 0.0,
) -> np.ndarray:
    """Bool (size, size) star-shaped blob: an ellipse whose radius wobbles with angle."""
    v, u = _local(size, cy, cx, angle)
    u = u / aspect
    theta = np.arctan2(v, u)
    radius = np.full_like(theta, r)
    for k in range(2, 6):  # low harmonics only: lobulated, not spiky
        amp = irregularity * rng.uniform(0.3, 1.0) / (k - 1)
        radius += r * amp * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(u, v) <= radius


def polyline(size: int, points: np.ndarray, width: float) -> np.ndarray:
    """Bool (size, size) stroke along `points` (N, 2) as normalised (y, x), `width` normalised."""
    canvas = Image.new("L", (size, size), 0)
    xy = [((x + 1) / 2 * size, (y + 1) / 2 * size) for y, x in points.tolist()]
    stroke = max(1, round(width / 2 * size))
    ImageDraw.Draw(canvas).line(xy, fill=255, width=stroke, joint="curve")
    return np.asarray(canvas) > 0


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) float32 noise with about `cells` blobs across, zero mean, unit-ish std."""
    low = rng.standard_normal((cells, cells)).astype(np.float32)
    up = Image.fromarray(low, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    out = np.asarray(up, dtype=np.float32)
    return out / max(float(out.std()), 1e-6)


def box_blur(values: np.ndarray, radius: int) -> np.ndarray:
    """Separable box blur of a (H, W) or (H, W, C) float array, edges clamped."""
    if radius <= 0:
        return values
    out: np.ndarray = values.astype(np.float32)
    width = 2 * radius + 1
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius + 1, radius)
        padded = np.pad(out, pad, mode="edge")
        csum = np.cumsum(padded, axis=axis, dtype=np.float32)
        hi = np.take(csum, np.arange(width, width + out.shape[axis]), axis=axis)
        lo = np.take(csum, np.arange(0, out.shape[axis]), axis=axis)
        out = (hi - lo) / width
    return out


def dilate(mask: np.ndarray, steps: int = 1) -> np.ndarray:
    """Bool (H, W) 4-neighbour dilation repeated `steps` times."""
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def random_point_in(mask: np.ndarray, rng: np.random.Generator) -> tuple[float, float] | None:
    """Normalised (y, x) of a random foreground pixel, or None if the mask is empty."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    k = int(rng.integers(ys.size))
    size_y, size_x = mask.shape
    return (ys[k] + 0.5) / size_y * 2 - 1, (xs[k] + 0.5) / size_x * 2 - 1
