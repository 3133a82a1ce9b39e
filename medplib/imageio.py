"""Load user images of any common kind into the (H, W, 3) uint8 RGB image the model needs.

Supported: PNG (incl. APNG), JPEG, TIFF, BMP, GIF, WebP via Pillow; DICOM via pydicom; NIfTI-1/2
(``.nii`` and ``.nii.gz``) via nibabel. The format is detected from the bytes, never from the
file name. Every user-fixable problem (empty, too large, truncated, not an image, no pixel data,
slice out of range, ...) raises `medplib.errors.UserInputError` with one sentence.

Intensity mapping to 8 bits, documented once here:

- 16-bit, 32-bit integer and float raster images: linear min/max stretch of the image.
- DICOM: modality values (``RescaleSlope`` / ``RescaleIntercept`` applied). CT uses a window
  preset (`WINDOW_PRESETS`, default ``soft_tissue``); other modalities use an automatic window
  from the 1st to the 99th percentile. MONOCHROME1 is inverted so air is dark.
- NIfTI: a volume whose minimum is below -500 is taken for CT in Hounsfield units and gets the
  ``soft_tissue`` preset; otherwise the automatic percentile window of the slice shown.
- A window maps ``[L - W/2, L + W/2]`` linearly onto 0..255 and clips outside it.
"""

from __future__ import annotations

import hashlib
import io
import math
import zlib
from dataclasses import dataclass, field
from struct import error as struct_error  # some Pillow plugins raise it on short data
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from medplib.errors import UserInputError
from medplib.imagelimits import (
    MAX_ASPECT_RATIO,
    NiftiHeader,
    PixelBudget,
    check_plane,
    check_volume,
    jpeg_size_px,
    nifti_header,
    nifti_plane_hw,
    png_size_px,
)

# (width, level) in Hounsfield units: the usual radiology reading windows.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "soft_tissue": (400.0, 40.0),
    "lung": (1500.0, -600.0),
    "bone": (1800.0, 400.0),
}
AUTO_WINDOW = "auto"  # 1st-99th percentile: robust to a few hot or dead pixels
AUTO_PERCENTILES = (1.0, 99.0)
CT_LIKE_MIN_VALUE = -500.0  # air is about -1000 HU; no non-CT scan goes this far below zero
MAX_VOLUME_VOXELS = 512 * 512 * 1024  # a large CT series; 1 GiB once held as float32
MAX_DECOMPRESSED_BYTES = 2 * 1024**3  # caps a .nii.gz before nibabel sees it
_BLOCK_VALUES = 1 << 20  # intensity mapping runs in blocks: float64 temporaries stay ~8 MB

_PIL_FORMATS = {
    "png": "PNG",
    "jpeg": "JPEG",
    "tiff": "TIFF",
    "bmp": "BMP",
    "gif": "GIF",
    "webp": "WEBP",
}
_SUPPORTED = "PNG, JPEG, TIFF, BMP, GIF, WebP, DICOM or NIfTI"


@dataclass
class LoadedImage:
    """An image ready for display and for the model, plus how it was obtained."""

    rgb: np.ndarray  # (H, W, 3) uint8, display/model image
    source_format: str  # "png", "jpeg", "tiff", "bmp", "gif", "webp", "dicom" or "nifti"
    original_mode: str  # e.g. Pillow mode "I;16", "MONOCHROME2 12-bit", "int16 (64, 64, 20)"
    height_px: int
    width_px: int
    modality_hint: str | None = None  # e.g. DICOM Modality "CT"; None when unknown
    notes: list[str] = field(default_factory=list)  # e.g. "window: lung (W 1500, L -600)"


def image_sha256(data: bytes) -> str:
    """Hex SHA-256 of the file bytes (identifies an upload independent of its name)."""
    return hashlib.sha256(data).hexdigest()


def _gunzip_head(data: bytes, size: int) -> bytes:
    try:
        return zlib.decompressobj(wbits=31).decompress(data, size)
    except zlib.error:
        return b""


def _is_nifti_header(head: bytes) -> bool:
    if len(head) >= 348:
        for order in ("<", ">"):
            if int(np.frombuffer(head[:4], dtype=f"{order}i4")[0]) == 348:
                return head[344:348] == b"n+1\x00"
    if len(head) >= 540:
        for order in ("<", ">"):
            if int(np.frombuffer(head[:4], dtype=f"{order}i4")[0]) == 540:
                return head[4:8] == b"n+2\x00"
    return False


def _looks_like_bare_dicom(data: bytes) -> bool:
    """A DICOM data set without the preamble: it opens with a group 0002 or 0008 element
    followed by a two-letter VR (explicit VR) or a plausible 4-byte length (implicit VR)."""
    if len(data) < 8:
        return False
    little, big = data[0] | data[1] << 8, data[0] << 8 | data[1]
    if little not in (0x0002, 0x0008) and big not in (0x0002, 0x0008):
        return False
    vr = data[4:6]
    if vr.isalpha() and vr.isupper():
        return True
    lengths = (int.from_bytes(data[4:8], "little"), int.from_bytes(data[4:8], "big"))
    return min(lengths) < min(len(data), 1 << 16)


def detect_format(data: bytes) -> str | None:
    """Format name from the file's magic numbers, or None when it is no supported image.

    ``DICM`` at byte 128 wins over every other signature: the 128-byte DICOM preamble is free
    for other uses and often holds a TIFF header (pydicom's ``CT_small.dcm`` does).
    """
    if data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    head = _gunzip_head(data, 544) if data.startswith(b"\x1f\x8b") else data[:544]
    if _is_nifti_header(head):
        return "nifti"
    if _looks_like_bare_dicom(data):
        return "dicom"  # read with pydicom's force=True
    return None


def load_image(
    data: bytes,
    *,
    filename: str | None = None,
    max_bytes: int = 50_000_000,
    max_pixels: int = 8192 * 8192,
    max_volume_voxels: int = MAX_VOLUME_VOXELS,
    max_aspect_ratio: float = MAX_ASPECT_RATIO,
    window: str | None = None,
    nifti_axis: int = 2,
    nifti_slice: int | None = None,
) -> LoadedImage:
    """Decode an uploaded file to a `LoadedImage`.

    ``window`` (DICOM and NIfTI only): a `WINDOW_PRESETS` name, ``"auto"`` for the percentile
    window, or None for the default described in the module docstring. ``nifti_axis`` and
    ``nifti_slice`` pick the slice of a volume (default: the middle slice of axis 2, axial for
    an RAS-oriented volume). ``max_pixels`` (one image, slice or frame), ``max_volume_voxels``
    (every voxel of a volume or multi-frame file) and ``max_aspect_ratio`` are checked from the
    header before any pixel is decoded (`medplib.imagelimits`); Pillow's own decompression-bomb
    limit (`PIL.Image.MAX_IMAGE_PIXELS`) also applies.
    """
    subject = f"'{filename}'" if filename else "The file"
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise UserInputError(f"{subject} must be given as bytes, not {type(data).__name__}.")
    data = bytes(data)
    if not data:
        raise UserInputError(f"{subject} is empty (0 bytes); upload the image again.")
    if len(data) > max_bytes:
        raise UserInputError(
            f"{subject} is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.1f} MB."
        )
    if window is not None and window != AUTO_WINDOW and window not in WINDOW_PRESETS:
        options = ", ".join([*WINDOW_PRESETS, AUTO_WINDOW])
        raise UserInputError(f"Unknown window {window!r}; choose one of {options}.")
    budget = PixelBudget(
        max_plane_pixels=max_pixels,
        max_volume_voxels=max_volume_voxels,
        max_aspect_ratio=max_aspect_ratio,
    )
    fmt = detect_format(data)
    if fmt is None and filename and filename.lower().endswith((".dcm", ".dicom")):
        fmt = "dicom"  # DICOM without the 128-byte preamble: let pydicom try
    if fmt is None and data.startswith(b"\x1f\x8b"):
        raise UserInputError(
            f"{subject} is gzip-compressed but holds no complete NIfTI header; it may be "
            "truncated or not a .nii.gz volume."
        )
    if fmt is None:
        raise UserInputError(f"{subject} is not an image: its content is not {_SUPPORTED} data.")
    if fmt == "dicom":
        return _load_dicom(data, subject=subject, budget=budget, window=window)
    if fmt == "nifti":
        return _load_nifti(
            data,
            subject=subject,
            budget=budget,
            window=window,
            axis=nifti_axis,
            index=nifti_slice,
        )
    loaded = _load_raster(data, fmt, subject=subject, budget=budget)
    if window is not None:
        loaded.notes.append(f"window {window!r} ignored: windows apply to DICOM and NIfTI only")
    return loaded


# Raster images (Pillow).


_HEADER_SIZE = {"png": png_size_px, "jpeg": jpeg_size_px}


def _load_raster(data: bytes, fmt: str, *, subject: str, budget: PixelBudget) -> LoadedImage:
    kind = fmt.upper()
    declared = _HEADER_SIZE[fmt](data) if fmt in _HEADER_SIZE else None
    if declared is not None:  # before Pillow parses more than the header
        check_plane(subject, *declared, budget)
    bomb_limit = Image.MAX_IMAGE_PIXELS
    bomb_error = UserInputError(
        f"{subject} declares more than {(bomb_limit or 0) / 1e6:.0f} megapixels, too many to "
        "open safely; downscale it first."
    )
    try:
        image = Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]])
    except Image.DecompressionBombError:
        raise bomb_error from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct_error):
        raise UserInputError(
            f"{subject} looks like a {kind} file but its header is corrupt; re-export the image."
        ) from None
    with image:
        width, height = image.size
        if width < 1 or height < 1:
            raise UserInputError(f"{subject} has no pixels ({width}x{height}).")
        # Pillow only warns between its limit and twice that; treat the warning level as an
        # error too (checking here rather than through warning filters stays thread-safe).
        if bomb_limit is not None and width * height > bomb_limit:
            raise bomb_error
        check_plane(subject, width, height, budget)
        notes: list[str] = []
        frames = int(getattr(image, "n_frames", 1))
        if frames > 1:
            notes.append(f"the file has {frames} frames; the first is shown")
        mode = image.mode
        try:
            image.load()
            orientation = image.getexif().get(0x0112, 1)
            oriented = ImageOps.exif_transpose(image)  # a loaded copy, upright
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct_error):
            raise UserInputError(
                f"{subject} is a truncated or corrupt {kind} file; upload it again or re-export it."
            ) from None
    if orientation not in (None, 1):
        notes.append(f"EXIF orientation {orientation} applied")
    rgb = _pil_to_rgb(oriented if oriented is not None else image, notes)
    return LoadedImage(
        rgb=rgb,
        source_format=fmt,
        original_mode=mode,
        height_px=int(rgb.shape[0]),
        width_px=int(rgb.shape[1]),
        notes=notes,
    )


def _over_black(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 -> (H, W, 3) uint8 composited over black."""
    alpha = rgba[..., 3:4].astype(np.uint16)
    return ((rgba[..., :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)


def _pil_to_rgb(image: Image.Image, notes: list[str]) -> np.ndarray:
    mode = image.mode
    if mode in ("1", "L"):
        grey = np.asarray(image.convert("L"))
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(image), dtype=np.uint8)
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode == "P" and "transparency" in image.info):
        notes.append("transparent areas composited over black")
        return _over_black(np.asarray(image.convert("RGBA")))
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image)  # (H, W); no float copy: _stretch maps it in blocks
        grey = _stretch(values, notes, what=f"{mode} intensities")
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.ascontiguousarray(np.asarray(image.convert("RGB")), dtype=np.uint8)


def _stretch(values: np.ndarray, notes: list[str], *, what: str) -> np.ndarray:
    """Min/max stretch of finite values to uint8 (NaN/inf become 0)."""
    if np.issubdtype(values.dtype, np.integer):  # always finite: no masked copy needed
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    else:
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if lo == hi:
        notes.append(f"{what}: the image has a single value, shown black")
        return np.zeros(values.shape, dtype=np.uint8)
    notes.append(f"{what} scaled to 8 bits by min/max ({lo:g}..{hi:g})")
    return _window_to_uint8(values, lo, hi)


def _window_to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    out = np.empty(values.shape, dtype=np.uint8)
    row_values = max(1, math.prod(values.shape[1:]))
    step = max(1, _BLOCK_VALUES // row_values)
    for start in range(0, values.shape[0], step):
        block = np.asarray(values[start : start + step], dtype=np.float64)
        scaled = (np.nan_to_num(block, nan=lo, posinf=hi, neginf=lo) - lo) / (hi - lo)
        out[start : start + step] = np.round(np.clip(scaled, 0.0, 1.0) * 255.0)
    return out


def _apply_window(
    values: np.ndarray, window: str | None, *, ct_like: bool, notes: list[str]
) -> np.ndarray:
    """Map modality values to uint8 with a preset or the percentile window; notes the choice."""
    name = window if window is not None else ("soft_tissue" if ct_like else AUTO_WINDOW)
    if name != AUTO_WINDOW:
        width, level = WINDOW_PRESETS[name]
        notes.append(f"window: {name} (W {width:g}, L {level:g})")
        return _window_to_uint8(values, level - width / 2, level + width / 2)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        notes.append("the image has no finite values, shown black")
        return np.zeros(values.shape, dtype=np.uint8)
    lo, hi = (float(v) for v in np.percentile(finite, AUTO_PERCENTILES))
    if hi <= lo:  # mostly one value: fall back to the full range
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        notes.append("the image has a single value, shown black")
        return np.zeros(values.shape, dtype=np.uint8)
    notes.append(f"window: auto 1st-99th percentile (W {hi - lo:g}, L {(hi + lo) / 2:g})")
    return _window_to_uint8(values, lo, hi)


# DICOM (pydicom).


def _load_dicom(
    data: bytes, *, subject: str, budget: PixelBudget, window: str | None
) -> LoadedImage:
    import pydicom
    from pydicom.pixels import pixel_array

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception:
        raise UserInputError(f"{subject} is not a readable DICOM file.") from None
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise UserInputError("The DICOM file has no pixel data.")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < 1 or cols < 1:
        raise UserInputError("The DICOM file does not state its image size (Rows/Columns).")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    check_plane(subject, cols, rows, budget)
    if frames > 1:
        bits = int(ds.get("BitsAllocated", 16) or 16)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        itemsize = max(1, bits // 8) * samples
        check_volume(subject, (frames, rows, cols), f"{bits}-bit", itemsize, budget)
    notes: list[str] = []
    try:
        if frames > 1:
            array = pixel_array(ds, index=0)
            notes.append(f"the DICOM file has {frames} frames; the first is shown")
        else:
            array = pixel_array(ds)
    except Exception as error:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", None) or "unknown transfer syntax"
        raise UserInputError(
            f"The DICOM pixel data could not be decoded ({name}: {error})."
        ) from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8)
    modality = str(ds.get("Modality", "")) or None
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        if array.dtype == np.uint8:
            rgb = np.ascontiguousarray(array[..., :3])
        else:
            grey_notes: list[str] = []
            rgb = _stretch(array[..., :3].astype(np.float64), grey_notes, what="colour values")
            notes.extend(grey_notes)
    elif array.ndim == 2:
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        values = array.astype(np.float64) * slope + intercept  # (H, W) modality units
        grey = _apply_window(values, window, ct_like=modality == "CT", notes=notes)
        if photometric == "MONOCHROME1":
            grey = 255 - grey
            notes.append("MONOCHROME1 inverted so that low values are dark")
        rgb = np.repeat(grey[..., None], 3, axis=-1)
    else:
        raise UserInputError(f"The DICOM pixel data has an unsupported shape {array.shape}.")
    return LoadedImage(
        rgb=rgb,
        source_format="dicom",
        original_mode=f"{photometric} {bits}-bit",
        height_px=int(rgb.shape[0]),
        width_px=int(rgb.shape[1]),
        modality_hint=modality,
        notes=notes,
    )


# NIfTI (nibabel).


def _nifti_gunzipped(data: bytes) -> bytes:
    """The .nii bytes of a .nii.gz, decompressed only as far as its header declares data."""
    head = _gunzip_head(data, 544)
    if not _is_nifti_header(head):
        raise UserInputError("The file is not a NIfTI-1 or NIfTI-2 volume.")
    header = nifti_header(head)
    # Trailing bytes past the declared voxels are never read, so never decompressed either.
    needed = min(header.data_offset + header.data_bytes, MAX_DECOMPRESSED_BYTES)
    decompressor = zlib.decompressobj(wbits=31)
    try:
        raw = decompressor.decompress(data, needed)
    except zlib.error:
        raise UserInputError("The .nii.gz file is corrupt (gzip error).") from None
    if len(raw) < needed:
        raise UserInputError("The .nii.gz file is truncated; upload it again.")
    return raw


def nifti_file_header(data: bytes) -> NiftiHeader:
    """The header of a ``.nii`` or ``.nii.gz`` file, read without decompressing the voxels."""
    head = _gunzip_head(data, 544) if data.startswith(b"\x1f\x8b") else data[:544]
    if not _is_nifti_header(head):
        raise UserInputError("The file is not a NIfTI-1 or NIfTI-2 volume.")
    return nifti_header(head)


def _nifti_image(data: bytes, budget: PixelBudget) -> Any:
    import nibabel as nib

    header = nifti_file_header(data)
    # Every voxel the file stores is decompressed, so all of them count.
    check_volume("The NIfTI file", header.shape, header.dtype, header.itemsize, budget)
    if data.startswith(b"\x1f\x8b"):
        data = _nifti_gunzipped(data)
    nifti2 = 540 in (int.from_bytes(data[:4], "little"), int.from_bytes(data[:4], "big"))
    image_class = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    try:
        return image_class.from_bytes(data)
    except Exception as error:
        raise UserInputError(f"The NIfTI header could not be read ({error}).") from None


def load_volume(
    data: bytes, *, budget: PixelBudget | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a NIfTI volume (``.nii`` or ``.nii.gz`` bytes) as float32, reoriented to RAS.

    Returns ``(volume, info)``: ``volume`` is (X, Y, Z) with voxel axes ordered and flipped to
    point Right, Anterior, Superior (scale slope/intercept applied); 2-D data gets Z = 1 and
    4-D data keeps only its first volume (a note says so). ``info`` holds ``shape`` (as
    stored), ``dtype``, ``ndim``, ``zooms`` and ``notes``. 5-D and larger data, files holding
    more voxels than ``budget.max_volume_voxels`` (default `MAX_VOLUME_VOXELS`; checked from
    the header, before decompressing) and unreadable files raise UserInputError.
    """
    import nibabel as nib

    image = _nifti_image(data, budget or PixelBudget())
    shape = tuple(int(v) for v in image.shape)
    notes: list[str] = []
    if len(shape) > 4:
        raise UserInputError(
            f"The NIfTI data has {len(shape)} dimensions {shape}; only 2-D, 3-D and 4-D are "
            "supported."
        )
    if len(shape) < 2 or min(shape) < 1:
        raise UserInputError(f"The NIfTI data has no pixels (shape {shape}).")
    try:
        if len(shape) == 4:
            notes.append(f"the NIfTI file has {shape[3]} volumes; the first is used")
            volume = np.asarray(image.dataobj[..., 0], dtype=np.float32)
        else:
            volume = np.asarray(image.dataobj, dtype=np.float32)
    except Exception:
        raise UserInputError(
            "The NIfTI file is truncated or damaged: its voxel data could not be read."
        ) from None
    if volume.ndim == 2:
        volume = volume[:, :, None]  # (X, Y, 1)
    try:
        orientation = nib.orientations.io_orientation(image.affine)
        volume = nib.orientations.apply_orientation(volume, orientation)
    except Exception:
        notes.append("the orientation could not be determined; voxel order is used")
    info = {
        "shape": shape,
        "dtype": str(image.get_data_dtype()),
        "ndim": len(shape),
        "zooms": tuple(float(v) for v in image.header.get_zooms()),
        "notes": notes,
    }
    return np.ascontiguousarray(volume, dtype=np.float32), info


def slice_volume(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """One 2-D slice of an RAS (X, Y, Z) volume, oriented for display.

    ``axis`` 0 = sagittal, 1 = coronal, 2 = axial. The slice is transposed and flipped so rows
    run from superior (or anterior, for axial) to the opposite side and columns from the
    patient's right to left (anterior to posterior, for sagittal): radiological convention.
    """
    if volume.ndim != 3:
        raise UserInputError(f"Expected a 3-D volume; got shape {volume.shape}.")
    if axis not in (0, 1, 2):
        raise UserInputError(f"The slice axis must be 0, 1 or 2; got {axis}.")
    count = volume.shape[axis]
    if not 0 <= index < count:
        raise UserInputError(
            f"Slice {index} is out of range: axis {axis} has slices 0 to {count - 1}."
        )
    plane = np.take(volume, index, axis=axis)  # (remaining axis a, remaining axis b)
    return np.ascontiguousarray(plane.T[::-1, ::-1])  # (rows = b reversed, cols = a reversed)


def _load_nifti(
    data: bytes,
    *,
    subject: str,
    budget: PixelBudget,
    window: str | None,
    axis: int,
    index: int | None,
) -> LoadedImage:
    header = nifti_file_header(data)
    ras = header.ras_shape
    if ras is not None and axis in (0, 1, 2) and 2 <= len(header.shape) <= 4:
        if len(header.shape) == 2:  # shown as is: the plane is the one axis that is not 1
            axis = next(a for a in (2, 0, 1) if ras[a] == 1)
        height, width = nifti_plane_hw(ras, axis)
        check_plane(f"The NIfTI slice across axis {axis}", width, height, budget)
    volume, info = load_volume(data, budget=budget)
    notes: list[str] = list(info["notes"])
    if info["ndim"] == 2:
        axis = next(a for a in (2, 0, 1) if volume.shape[a] == 1)
        index = 0
        notes.append("2-D NIfTI image: shown as is")
    if axis not in (0, 1, 2):
        raise UserInputError(f"The slice axis must be 0, 1 or 2; got {axis}.")
    if index is None:
        index = volume.shape[axis] // 2
    plane = slice_volume(volume, axis, index)  # (rows, cols), checked from the header above
    if info["ndim"] != 2:
        notes.append(f"slice {index} of {volume.shape[axis]} along axis {axis}")
    ct_like = bool(np.nanmin(volume) < CT_LIKE_MIN_VALUE)
    grey = _apply_window(plane.astype(np.float64), window, ct_like=ct_like, notes=notes)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    return LoadedImage(
        rgb=rgb,
        source_format="nifti",
        original_mode=f"{info['dtype']} {info['shape']}",
        height_px=int(rgb.shape[0]),
        width_px=int(rgb.shape[1]),
        modality_hint="CT" if ct_like else None,
        notes=notes,
    )
