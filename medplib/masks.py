"""Binary mask encodings: COCO run-length encoding, PNG bytes, areas, boxes, hole filling and
resizing.

All functions are pure and work on numpy arrays of shape (H, W). A mask is "foreground" where it
is non-zero; every function returns bool masks.

COCO RLE. `encode_rle` writes the *compressed* form that pycocotools' ``mask.encode`` produces,
byte for byte (as ``str`` rather than ``bytes`` so it can go straight into JSON):

- pixels are read column by column (Fortran order), and the run lengths alternate between
  background and foreground, always starting with a (possibly empty) background run;
- each run length is first replaced by its difference to the run two places earlier (only from
  the fourth run on, exactly as pycocotools does), then written as a little-endian sequence of
  5-bit groups, one ASCII character per group: ``chr(48 + group)``, with bit 0x20 set on every
  character but the last, and the last group carrying the sign in its bit 0x10.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from medplib.errors import UserInputError

_CHAR_OFFSET = 48  # '0': pycocotools maps 6-bit groups to ASCII 48..111
_CONTINUE_BIT = 0x20  # more characters follow for this number
_SIGN_BIT = 0x10  # set in the last group of a negative number


def _as_mask(mask: Any, name: str = "mask") -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"The {name} must be a 2-D array (H, W); got shape {array.shape}.")
    return array.astype(bool, copy=False)


def _runs(mask: np.ndarray) -> np.ndarray:
    """Alternating background/foreground run lengths in column-major order, background first."""
    flat = mask.ravel(order="F")  # (H*W,) column by column
    if flat.size == 0:
        return np.zeros(1, dtype=np.int64)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # first index of each new run
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds)
    if flat[0]:
        runs = np.concatenate(([0], runs))  # the first run is always background, maybe empty
    return runs.astype(np.int64)


def _counts_to_string(counts: np.ndarray) -> str:
    chars: list[str] = []
    values = [int(v) for v in counts]
    for i, value in enumerate(values):
        x = value - values[i - 2] if i > 2 else value
        while True:
            group = x & 0x1F
            x >>= 5  # arithmetic shift: negative numbers end at -1
            more = x != -1 if group & _SIGN_BIT else x != 0
            if more:
                group |= _CONTINUE_BIT
            chars.append(chr(group + _CHAR_OFFSET))
            if not more:
                break
    return "".join(chars)


def _string_to_counts(text: str) -> list[int]:
    counts: list[int] = []
    x, shift = 0, 0
    for position, char in enumerate(text):
        group = ord(char) - _CHAR_OFFSET
        if not 0 <= group < 64:
            raise ValueError(
                f"The RLE counts string has an invalid character {char!r} at position {position}."
            )
        x |= (group & 0x1F) << shift
        shift += 5
        if group & _CONTINUE_BIT:
            continue
        if group & _SIGN_BIT:
            x |= -1 << shift  # sign-extend
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
        x, shift = 0, 0
    if shift:
        raise ValueError("The RLE counts string is truncated: its last number is incomplete.")
    return counts


def _rle_counts(rle: dict) -> tuple[int, int, list[int]]:
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError('An RLE must be a dict with "size" [h, w] and "counts".')
    size = rle["size"]
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
        or min(size) < 0
    ):
        raise ValueError(f'The RLE "size" must be [height, width] in pixels; got {size!r}.')
    height, width = int(size[0]), int(size[1])
    raw = rle["counts"]
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", errors="replace")
    if isinstance(raw, str):
        counts = _string_to_counts(raw)
    elif isinstance(raw, (list, tuple, np.ndarray)):
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in raw):
            raise ValueError("Uncompressed RLE counts must all be integers.")
        counts = [int(v) for v in raw]
    else:
        raise ValueError(
            f'RLE "counts" must be a string or a list of integers; got {type(raw).__name__}.'
        )
    if any(c < 0 for c in counts):
        raise ValueError("The RLE has a negative run length; the counts are corrupt.")
    total = sum(counts)
    if total != height * width:
        raise ValueError(
            f"The RLE run lengths sum to {total} but its size {height}x{width} "
            f"needs {height * width} pixels."
        )
    return height, width, counts


def encode_rle(mask: np.ndarray) -> dict:
    """Encode a (H, W) mask as compressed COCO RLE ``{"size": [h, w], "counts": str}``.

    The counts string is identical to ``pycocotools.mask.encode(...)["counts"].decode()``.
    """
    array = _as_mask(mask)
    height, width = array.shape
    return {"size": [int(height), int(width)], "counts": _counts_to_string(_runs(array))}


def decode_rle(rle: dict) -> np.ndarray:
    """Decode compressed (``counts`` str/bytes) or uncompressed (``counts`` list) COCO RLE.

    Returns a bool (H, W) mask. Raises ValueError when the counts are malformed or do not
    add up to H*W pixels.
    """
    height, width, counts = _rle_counts(rle)
    values = np.arange(len(counts)) % 2 == 1  # runs alternate background, foreground, ...
    flat = np.repeat(values, counts)  # (H*W,)
    return flat.reshape((width, height)).T.copy()  # column-major back to (H, W)


def mask_area(mask: np.ndarray) -> int:
    """Number of foreground pixels."""
    return int(np.count_nonzero(_as_mask(mask)))


def rle_area(rle: dict) -> int:
    """Number of foreground pixels of a COCO RLE, read from the run lengths without decoding."""
    _, _, counts = _rle_counts(rle)
    return int(sum(counts[1::2]))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every background area it encloses filled (4-connected background).

    Background that cannot reach the image border without crossing the mask is a hole. The
    reachable background is grown by alternating row and column sweeps: one sweep carries
    reachability along a whole background run at once, so a path needs one sweep per turn,
    not one step per pixel (a few sweeps for outlines drawn by hand, O(H·W) each).
    """
    array = _as_mask(mask)
    background = ~array
    reached = np.zeros_like(background)
    for edge in (np.s_[0, :], np.s_[-1, :], np.s_[:, 0], np.s_[:, -1]):
        reached[edge] = background[edge]
    while True:
        before = int(np.count_nonzero(reached))
        reached = _spread_along_rows(reached, background)
        reached = _spread_along_rows(reached.T, background.T).T
        if int(np.count_nonzero(reached)) == before:
            break
    return array | (background & ~reached)


def _spread_along_rows(reached: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Mark a whole run of background pixels in a row reached when any of its pixels is."""
    flat = np.ascontiguousarray(background).ravel()
    width = background.shape[1]
    starts = np.ones(flat.size, dtype=bool)
    starts[1:] = flat[1:] != flat[:-1]
    starts[::width] = True  # runs never continue onto the next row
    run = np.cumsum(starts) - 1  # (H*W,) run index of every pixel
    hit = np.bincount(run, weights=np.ascontiguousarray(reached).ravel(), minlength=run[-1] + 1)
    return ((hit[run] > 0) & flat).reshape(background.shape)


def mask_bbox_xyxy_px(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight half-open pixel box ``(x0, y0, x1, y1)`` of the foreground, or None if empty.

    ``x0``/``y0`` are the first foreground column/row and ``x1``/``y1`` one past the last, so
    ``mask[y0:y1, x0:x1]`` holds every foreground pixel and ``x1 - x0`` is the box width.
    """
    array = _as_mask(mask)
    rows = np.flatnonzero(array.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(array.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def mask_to_png_bytes(mask: np.ndarray) -> bytes:
    """Encode a mask as an 8-bit greyscale ("L") PNG with background 0 and foreground 255."""
    array = _as_mask(mask)
    if array.size == 0:
        raise ValueError("An empty (0-pixel) mask cannot be written as a PNG.")
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8) * 255, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def png_bytes_to_mask(data: bytes) -> np.ndarray:
    """Decode a mask image (PNG or any format Pillow reads) to a bool (H, W) mask.

    Foreground rule, for every mode (1, L, P, I;16, I, F, RGB, LA, RGBA, ...):
    palette images are first expanded to their colours; if the image has an alpha channel that
    is not fully opaque, foreground is ``alpha > 0``; otherwise a pixel is foreground when any
    of its channels is non-zero.
    """
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            image: Image.Image = opened  # a file image; its conversions are plain images
            if image.mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            elif image.mode == "PA":
                image = image.convert("RGBA")
            array = np.asarray(image)
            bands = image.getbands()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UserInputError(f"The mask file could not be read as an image ({error}).") from None
    if array.ndim == 2:
        return array != 0
    if "A" in bands:
        alpha = array[..., bands.index("A")]
        if np.any(alpha != 255):
            return alpha > 0
        array = np.delete(array, bands.index("A"), axis=-1)
    return np.any(array != 0, axis=-1)


def resize_mask_nearest(mask: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize a mask to ``(height, width)`` by nearest neighbour on pixel centres.

    Output pixel i samples input pixel ``floor((i + 0.5) * in / out)``, computed in integers so
    that exact integer scale factors map blocks exactly (a 2x downscale followed by this 2x
    upscale restores every 2x2 block).
    """
    array = _as_mask(mask)
    out_h, out_w = (int(v) for v in size_hw)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"The target size must be at least 1x1; got {out_h}x{out_w}.")
    in_h, in_w = array.shape
    if in_h < 1 or in_w < 1:
        raise ValueError("Cannot resize an empty (0-pixel) mask.")
    rows = ((2 * np.arange(out_h, dtype=np.int64) + 1) * in_h) // (2 * out_h)  # (out_h,)
    cols = ((2 * np.arange(out_w, dtype=np.int64) + 1) * in_w) // (2 * out_w)  # (out_w,)
    return array[rows[:, None], cols[None, :]]
