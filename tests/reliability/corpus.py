"""The bad-input corpus, generated in code: files and requests that must never crash anything.

Each case says what a user must see: an error whose text contains ``expect``, or
acceptance (``expect=None``) with an explanatory note, for unusual-but-valid input.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from dataclasses import dataclass
from functools import cache
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class FileCase:
    name: str
    data: bytes
    filename: str
    expect: str | None  # substring of the error, or None = accepted
    accepted_as: str | None = None  # when accepted: "format WxH" the stored image must have


def _png(arr: np.ndarray, **kw: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", **kw)
    return buf.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IEND", b"")


def png_bomb(side: int = 20000) -> bytes:
    """A 1-bit PNG of side x side zeros: about 50 kB on disk, 400 MP when decoded."""
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")
    )


@cache
def nifti_zeros_gz(shape: tuple[int, ...] = (512, 512, 1024)) -> bytes:
    """A .nii.gz of int16 zeros, compressed plane by plane: 0.5 MB for 512x512x1024 (512 MB)."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip framing
    parts = [comp.compress(header.binaryblock + b"\0" * 4)]
    plane = bytes(shape[0] * shape[1] * 2)
    parts += [comp.compress(plane) for _ in range(int(np.prod(shape[2:])))]
    return b"".join([*parts, comp.flush()])


@cache
def png16_zeros(width: int = 8192, height: int = 8192) -> bytes:
    """A 16-bit greyscale PNG of zeros: 130 kB for 8192 x 8192 (128 MB of samples)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = bytes(1 + 2 * width)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")
    )


def _pydicom_file(name: str) -> bytes:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        raise FileNotFoundError(f"pydicom no longer ships {name}")
    with open(path, "rb") as fh:
        return fh.read()


def _dicom_without_preamble() -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(_pydicom_file("CT_small.dcm")))
    ds.preamble = None
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def _dicom(with_pixels: bool) -> bytes:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality = "CT"
    ds.Rows, ds.Columns = 16, 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    if with_pixels:
        ds.PixelData = (np.arange(256, dtype=np.int16) * 8).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _nifti(shape: tuple[int, ...]) -> bytes:
    img = nib.Nifti1Image(np.arange(np.prod(shape), dtype=np.float32).reshape(shape), np.eye(4))
    return gzip.compress(img.to_bytes())


def _tiff16() -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.arange(64 * 64, dtype=np.uint16) * 16).reshape(64, 64)).save(buf, "TIFF")
    return buf.getvalue()


def _cmyk_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("CMYK", (32, 24), (10, 200, 30, 5)).save(buf, "JPEG")
    return buf.getvalue()


def _animated_gif() -> bytes:
    frames = [Image.new("P", (20, 20), i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def file_cases() -> list[FileCase]:
    good = _png(np.full((20, 30, 3), 120, np.uint8))
    return [
        FileCase("zero bytes", b"", "empty.png", "empty"),
        FileCase("truncated png", good[: len(good) // 2], "cut.png", "truncated"),
        FileCase("png signature only", good[:8], "sig.png", ""),
        FileCase("text named png", b"hello, I am text\n" * 10, "text.png", "not an image"),
        FileCase(
            "html named jpg", b"<html><script>alert(1)</script></html>", "x.jpg", "not an image"
        ),
        FileCase("json named dcm", b'{"a": 1}', "x.dcm", ""),
        FileCase("30000 x 30000 header", png_header_only(30000, 30000), "huge.png", "pixels"),
        FileCase("decompression bomb", png_bomb(), "bomb.png", "pixels"),
        FileCase("zero-size header", png_header_only(0, 10), "zero.png", ""),
        FileCase("random bytes", np.random.default_rng(0).bytes(4096), "noise.bin", "not an image"),
        FileCase("malformed dicom", b"\0" * 128 + b"DICM" + b"\xff" * 64, "bad.dcm", "DICOM"),
        FileCase("pixel-less dicom", _dicom(False), "nopix.dcm", "no pixel data"),
        FileCase("gzip that is not nifti", gzip.compress(b"not a volume" * 100), "x.nii.gz", ""),
        FileCase("truncated nifti", _nifti((8, 8, 4))[:200], "cut.nii.gz", ""),
        FileCase("5-D nifti", _nifti((4, 4, 4, 2, 2)), "five.nii.gz", ""),
        # Resource limits, read from headers before anything is decoded.
        FileCase(
            "nifti bomb 512x512x1024",
            nifti_zeros_gz(),
            "zeros.nii.gz",
            "holds 512x512x1024 int16 voxels (268 million, 0.54 GB decoded); the limit is "
            "134 million voxels",
        ),
        FileCase(
            "16-bit 8192x8192 png",
            png16_zeros(),
            "big16.png",
            "is 8192x8192 pixels (67.1 megapixels); the limit is 16.8 megapixels",
        ),
        FileCase(
            "1x100000 png",
            _png(np.zeros((100000, 1), np.uint8)),
            "strip.png",
            "is 1x100000 pixels, an aspect ratio of 100000:1; the model can use at most 24:1",
        ),
        # Unusual but valid: accepted, with a note saying what was done.
        FileCase("16-bit tiff", _tiff16(), "x16.tif", None),
        FileCase("cmyk jpeg", _cmyk_jpeg(), "cmyk.jpg", None),
        FileCase("animated gif", _animated_gif(), "anim.gif", None),
        FileCase("4-D nifti", _nifti((8, 8, 4, 3)), "four.nii.gz", None),
        FileCase("dicom with pixels", _dicom(True), "ok.dcm", None),
        FileCase(
            "dicom with a tiff preamble",
            _pydicom_file("CT_small.dcm"),
            "ct.dcm",
            None,
            "dicom 128x128",
        ),
        FileCase("dicom without preamble", _dicom_without_preamble(), "ct", None, "dicom 128x128"),
        FileCase("24:1 png", _png(np.zeros((10, 240), np.uint8)), "wide.png", None, "png 240x10"),
        FileCase("1x1 png", _png(np.zeros((1, 1), np.uint8)), "dot.png", None),
    ]


NAN = float("nan")

# (name, question, regions, expected error substring or None = accepted)
REQUEST_CASES: list[tuple[str, Any, Any, str | None]] = [
    ("empty question", "", [], "Type a question"),
    ("whitespace question", " \n\t ", [], "Type a question"),
    ("100 000-character question", "x" * 100_000, [], "limit is 2,000"),
    ("question not text", {"q": 1}, [], "must be text"),
    ("point out of bounds", "q", [{"kind": "point", "xy_px": [1000, 5]}], "outside"),
    ("negative point", "q", [{"kind": "point", "xy_px": [-3, 5]}], "outside"),
    ("NaN point", "q", [{"kind": "point", "xy_px": [NAN, 5]}], "NaN"),
    ("box outside", "q", [{"kind": "box", "xyxy_px": [500, 500, 600, 600]}], "outside"),
    ("zero-area box", "q", [{"kind": "box", "xyxy_px": [5, 5, 5, 9]}], "zero width"),
    ("NaN box", "q", [{"kind": "box", "xyxy_px": [0, 0, NAN, 3]}], "NaN"),
    ("1000 regions", "q", [{"kind": "point", "xy_px": [1, 1]}] * 1000, "At most 16 regions"),
    ("regions not a list", "q", {"kind": "point"}, "list"),
    ("unknown region kind", "q", [{"kind": "lasso"}], "kind"),
    ("mask of the wrong size", "q", [{"kind": "mask", "rle": {"size": [3, 3], "counts": [9]}}], ""),
    ("malformed rle", "q", [{"kind": "mask", "rle": {"size": [20, 30], "counts": "!!"}}], ""),
    ("string coordinates", "q", [{"kind": "point", "xy_px": ["1", "2"]}], ""),
    # Text that looks dangerous is stored as text and escaped when shown: accepted.
    ("script in question", "<script>alert('x')</script> what is this?", [], None),
    ("sql-looking question", "'; DROP TABLE turns; --", [], None),
    ("unicode question", "Qu'est-ce que c'est ? 这是什么？ 🩻", [], None),
]

TOKEN_CASES = ["", "short", "A" * 43, "../../etc/passwd" + "a" * 20, "' OR '1'='1' --" + "b" * 20]
