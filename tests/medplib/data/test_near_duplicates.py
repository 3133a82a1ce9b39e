"""Average hashes: the same image re-encoded stays close, another image is far, and the hash
agrees with the one the realdata manifests state."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from data_helpers import REALDATA, needs_realdata
from PIL import Image

from medplib.data.near_duplicates import average_hash, hamming_matrix, hash_from_hex, near_pairs


def _blobs(seed: int, side: int = 200) -> np.ndarray:
    """(side, side, 3) uint8: a few bright discs on a dark background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    grey = np.full((side, side), 40.0)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, side, 2).tolist() + [rng.uniform(10, 40)]
        grey[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.uniform(120, 250)
    return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)


def test_hash_of_half_bright_image_marks_the_bright_half():
    image = np.zeros((64, 64), np.uint8)
    image[:, :32] = 200  # left half bright
    bits = average_hash(image).reshape(16, 16)
    assert bits[:, :8].all() and not bits[:, 8:].any()
    assert hash_from_hex("f0").tolist() == [True] * 4 + [False] * 4
    with pytest.raises(ValueError, match="uint8"):
        average_hash(image.astype(np.float32))


def test_resized_and_jpeg_copy_is_near_another_image_is_far():
    original = _blobs(1)
    buffer = io.BytesIO()
    Image.fromarray(original).resize((128, 128), Image.Resampling.LANCZOS).save(
        buffer, "JPEG", quality=80
    )
    copy = np.asarray(Image.open(buffer).convert("RGB"))
    hashes = np.stack([average_hash(original), average_hash(copy), average_hash(_blobs(2))])
    d = hamming_matrix(hashes, hashes)
    assert d[0, 0] == 0 and d[0, 1] <= 10 and d[0, 2] > 30
    assert np.array_equal(d, d.T)
    assert near_pairs(hashes[:1], hashes[1:]) == [(0, 0, int(d[0, 1]))]


def test_hamming_matrix_counts_differing_bits():
    a = np.array([[1, 0, 1, 1], [0, 0, 0, 0]], bool)
    b = np.array([[1, 0, 1, 1], [1, 1, 1, 1], [0, 1, 0, 0]], bool)
    assert hamming_matrix(a, b).tolist() == [[0, 1, 4], [3, 4, 1]]
    assert near_pairs(a, b, max_bits=1) == [(0, 0, 0), (0, 1, 1), (1, 2, 1)]
    with pytest.raises(ValueError, match="lengths differ"):
        hamming_matrix(a, b[:, :3])


@pytest.mark.parametrize(
    "source", ["hc18-fetal-head", "bus-bra-breast-ultrasound", "ph2-dermoscopy"]
)
def test_hash_matches_the_manifest_column(source: str):
    needs_realdata()
    with (REALDATA / source / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))[:8]
    for row in rows:
        image = np.asarray(Image.open(REALDATA / source / row["image"]).convert("RGB"))
        mine, stated = average_hash(image), hash_from_hex(row["ahash16"])
        # The manifest hashed the file before its resize and JPEG step: a few bits may differ.
        assert hamming_matrix(mine, stated)[0, 0] <= 4, row["image"]
