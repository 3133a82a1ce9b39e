"""Image and mask files as MeCoVQA / SA-Med2D-20M store them: PNG (or any PIL format) on disk.

Masks are read as bool (H, W): foreground is any non-zero value, in any channel. Images are read
as (H, W, 3) uint8 RGB; high-bit-depth grey images are stretched to 8 bit from their own range.
PNGs are written without metadata so the same array always gives the same bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# PIL modes whose pixels are integers or floats wider than 8 bit.
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")


class FileReadError(Exception):
    """A file exists but cannot be decoded; the message names the file and the cause."""


@dataclass(frozen=True)
class MaskFile:
    """A decoded mask and what had to be assumed to read it."""

    mask: np.ndarray  # (H, W) bool
    notes: tuple[str, ...]


def resolve(root: Path, rel: str) -> tuple[Path | None, bool]:
    """Find ``root/rel``; if absent, ``root/rel.png`` (some MeCoVQA paths lack the suffix).

    Returns the path found (or None) and whether the ``.png`` suffix had to be added.
    """
    path = root / rel
    if path.is_file():
        return path, False
    fixed = root / f"{rel}.png"
    if not rel.lower().endswith(".png") and fixed.is_file():
        return fixed, True
    return None, False


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()  # decode now: truncated files fail here, not later in a worker
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise FileReadError(f"{path.name} cannot be decoded ({exc})") from exc
    return image


def _stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def image_to_rgb(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any PIL image; 16-bit / float grey is min-max stretched."""
    if image.mode in _WIDE_MODES:
        grey = _stretch_to_uint8(np.asarray(image))  # (H, W)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode in ("L", "1", "LA"):
        grey = np.asarray(image.convert("L"))
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB")).copy()


def load_image_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB; raises FileReadError if it cannot be decoded."""
    return image_to_rgb(_open(Path(path)))


def image_size_hw(path: str | Path) -> tuple[int, int]:
    """(H, W) of a readable image file; raises FileReadError if it cannot be decoded."""
    image = _open(Path(path))
    return image.height, image.width


def mask_from_image(image: Image.Image, threshold: float = 0) -> MaskFile:
    """Bool (H, W) mask: value > threshold in any colour channel (alpha ignored)."""
    notes: list[str] = []
    if image.mode in _WIDE_MODES or image.mode in ("L", "1"):
        values = np.asarray(image)
    elif image.mode == "LA":
        values = np.asarray(image.convert("L"))
    elif image.mode in _COLOUR_MODES:
        rgb = np.asarray(image.convert("RGB"))  # (H, W, 3)
        values = rgb.max(axis=2)
        notes.append(f"colour mask (mode {image.mode}): foreground is any non-zero channel")
    else:
        raise FileReadError(f"mask mode {image.mode!r} is not supported")
    return MaskFile(mask=np.asarray(values > threshold), notes=tuple(notes))


def read_mask(path: str | Path, threshold: float = 0) -> MaskFile:
    """Read a mask file; raises FileReadError if it cannot be decoded."""
    return mask_from_image(_open(Path(path)), threshold)


def load_mask(path: str | Path, threshold: float = 0) -> np.ndarray:
    """Read a mask file as bool (H, W): any value above `threshold` in any channel."""
    return read_mask(path, threshold).mask


def png_bytes(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H, W) or (H, W, 3) array, or a bool mask (written as 0/255)."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    buffer = io.BytesIO()
    # No text chunks or timestamps: identical arrays give identical files. Level 3: about a
    # third of level 6's time on corpus images and masks, and files no larger (measured on
    # 600 real images and masks), so building a corpus mostly stops waiting on zlib.
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(array))
