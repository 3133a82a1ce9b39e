"""Uploads are sized from their headers and decoded a few at a time: memory stays bounded.

Measured on this project's CI-sized host (before -> after this guard), peak RSS of a fresh
process decoding the file with the default settings:
- 0.5 MB .nii.gz of 512x512x1024 int16 zeros: 2615 MB (accepted) -> 87 MB, refused; three
  at once also 87 MB;
- 130 kB 16-bit 8192x8192 PNG of zeros: 1398 MB -> 648 MB, accepted; three at once 1232 MB
  (two decode slots).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from serving.services.errors import InvalidInput, Unavailable
from serving.services.images import decode_slot, decode_upload
from serving.settings import Settings
from tests.processes import ROOT
from tests.reliability.corpus import nifti_zeros_gz, png16_zeros
from tests.serving.conftest import png_bytes

BOMB_PEAK_BOUND_MB = 600  # the bomb added 2.5 GB; refused from its header it adds ~15 MB
PNG16_PEAK_BOUND_MB = 1000  # 1398 MB before the blockwise 8-bit mapping, 648 MB after


def _decode_in_child(path: Path, copies: int = 1) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDPLIB_")}
    done = subprocess.run(
        [sys.executable, "-m", "tests.reliability.decode_child", str(path), str(copies)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_nifti_bomb_is_refused_from_its_header_with_a_small_peak(tmp_path):
    path = tmp_path / "zeros.nii.gz"
    path.write_bytes(nifti_zeros_gz((512, 512, 1024)))
    assert path.stat().st_size < 1_000_000  # the bomb: under 1 MB on disk, 512 MB inside
    result = _decode_in_child(path, copies=3)
    assert (
        result["outcomes"]
        == [
            "refused: The NIfTI file holds 512x512x1024 int16 voxels (268 million, 0.54 GB "
            "decoded); the limit is 134 million voxels, so upload fewer slices."
        ]
        * 3
    )
    assert result["peak_mb"] < BOMB_PEAK_BOUND_MB, result


def test_sixteen_bit_8192_png_decodes_within_bound(tmp_path):
    path = tmp_path / "big16.png"
    path.write_bytes(png16_zeros(8192, 8192))
    result = _decode_in_child(path)
    assert result["outcomes"] == ["accepted 8192x8192"]
    assert result["peak_mb"] < PNG16_PEAK_BOUND_MB, result


def test_decodes_wait_for_a_slot_and_give_up_with_a_clear_message():
    settings = Settings(max_concurrent_decodes=1, decode_wait_s=0.2)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with decode_slot(settings):
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        with pytest.raises(Unavailable, match="busy reading other uploads; nothing was saved"):
            with decode_slot(settings):
                pass
    finally:
        release.set()
        holder.join(10)
    with decode_slot(settings):  # the slot came back
        loaded = decode_upload(png_bytes(30, 20), settings=settings)
    assert (loaded.width_px, loaded.height_px) == (30, 20)


def test_settings_limits_reach_the_decoder():
    strip = png_bytes(250, 10)  # 25:1
    with pytest.raises(
        InvalidInput, match=r"aspect ratio of 25.0:1; the model can use at most 24:1"
    ):
        decode_upload(strip, settings=Settings())
    assert decode_upload(strip, settings=Settings(max_aspect_ratio=30)).width_px == 250
    volume = nifti_zeros_gz((16, 16, 8))
    with pytest.raises(InvalidInput, match=r"holds 16x16x8 int16 voxels .* limit is 0 million"):
        decode_upload(volume, settings=Settings(max_volume_voxels=2047))
    assert decode_upload(volume, settings=Settings(max_volume_voxels=2048)).width_px == 16
