"""Perceptual (average) hashes, to find near-duplicate images across training and evaluation.

The shared realdata folder states, per image, a 16x16 average hash (``ahash16``) and checks
that no newer image lies within Hamming distance 10 of an older holdout or zero-shot one. The
same hash here lets a test check that promise on the built corpus: resizing, re-encoding and
small intensity changes move the hash by a few bits, a different image by tens of bits.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

HASH_SIDE = 16  # 16x16 = 256 bits, as the realdata manifests' ``ahash16`` column
NEAR_DUPLICATE_BITS = 10  # the realdata README's threshold: distance ≤ 10 counts as the same image


def average_hash(image: np.ndarray, side: int = HASH_SIDE) -> np.ndarray:
    """(side * side,) bool: which cells of the grey image, shrunk to side x side, are above its mean.

    `image`: (H, W) or (H, W, 3) uint8. Lanczos shrinking, as the realdata manifests were hashed
    (checked against their ``ahash16`` column by a test).
    """
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(
            f"Expected an (H, W) or (H, W, 3) uint8 image; got {array.dtype} {array.shape}."
        )
    grey = Image.fromarray(array).convert("L").resize((side, side), Image.Resampling.LANCZOS)
    cells = np.asarray(grey, dtype=np.float64)  # (side, side)
    return (cells > cells.mean()).reshape(-1)


def hash_from_hex(text: str) -> np.ndarray:
    """The bool bits of a hex hash (most significant bit first), e.g. a manifest's ``ahash16``."""
    bits = bin(int(text, 16))[2:].zfill(len(text) * 4)
    return np.array([b == "1" for b in bits], dtype=bool)


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) int: bits that differ between each of the N hashes in `a` and the M in `b`."""
    a2, b2 = np.atleast_2d(np.asarray(a, bool)), np.atleast_2d(np.asarray(b, bool))
    if a2.shape[1] != b2.shape[1]:
        raise ValueError(f"Hash lengths differ: {a2.shape[1]} and {b2.shape[1]} bits.")
    # Packed bytes and a popcount table: 2,000 x 2,000 hashes in well under a second.
    pa, pb = np.packbits(a2, axis=1), np.packbits(b2, axis=1)  # (N, bytes), (M, bytes)
    popcount = np.array([bin(v).count("1") for v in range(256)], dtype=np.int32)
    out = np.zeros((len(pa), len(pb)), dtype=np.int32)
    for k in range(pa.shape[1]):
        out += popcount[np.bitwise_xor.outer(pa[:, k], pb[:, k])]
    return out


def near_pairs(
    a: np.ndarray, b: np.ndarray, max_bits: int = NEAR_DUPLICATE_BITS
) -> list[tuple[int, int, int]]:
    """(index in a, index in b, distance) for every pair at most `max_bits` apart."""
    if len(a) == 0 or len(b) == 0:
        return []
    distances = hamming_matrix(a, b)
    rows, cols = np.nonzero(distances <= max_bits)
    return [(int(i), int(j), int(distances[i, j])) for i, j in zip(rows, cols, strict=True)]
