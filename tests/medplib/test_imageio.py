from __future__ import annotations

import gzip
import hashlib
import io
import struct
import zlib

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medplib.errors import UserInputError
from medplib.imageio import (
    WINDOW_PRESETS,
    detect_format,
    image_sha256,
    load_image,
    load_volume,
    slice_volume,
)
from medplib.imagelimits import PixelBudget


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height (8-bit grey) with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


# Raster images.


def test_grey_modes():
    grey = np.array([[0, 50, 255], [10, 20, 30]], dtype=np.uint8)  # (2, 3)
    loaded = load_image(_save(Image.fromarray(grey), "PNG"), filename="scan.png")
    assert (loaded.source_format, loaded.original_mode) == ("png", "L")
    assert (loaded.height_px, loaded.width_px) == (2, 3)
    assert loaded.rgb.shape == (2, 3, 3) and loaded.rgb.dtype == np.uint8
    np.testing.assert_array_equal(loaded.rgb[..., 1], grey)
    one_bit = load_image(_save(Image.fromarray(grey > 25), "PNG"))
    assert one_bit.original_mode == "1"
    np.testing.assert_array_equal(one_bit.rgb[..., 0], np.where(grey > 25, 255, 0))


def test_sixteen_bit_png_and_tiff_min_max():
    values = np.array([[0, 1000], [4000, 2000]], dtype=np.uint16)
    expected = np.round(values / 4000 * 255).astype(np.uint8)  # min 0, max 4000
    png = load_image(_save(Image.fromarray(values), "PNG"))
    assert png.original_mode == "I;16"
    np.testing.assert_array_equal(png.rgb[..., 0], expected)
    assert any("min/max (0..4000)" in note for note in png.notes)
    big_endian = Image.frombytes("I;16B", (2, 2), values.astype(">u2").tobytes())
    tiff = load_image(_save(big_endian, "TIFF"))
    assert (tiff.source_format, tiff.original_mode) == ("tiff", "I;16B")
    np.testing.assert_array_equal(tiff.rgb[..., 2], expected)
    floats = np.array([[-1.0, 0.0], [np.nan, 1.0]], dtype=np.float32)
    f_mode = load_image(_save(Image.fromarray(floats, mode="F"), "TIFF"))
    assert f_mode.original_mode == "F"
    np.testing.assert_array_equal(f_mode.rgb[..., 0], [[0, 128], [0, 255]])


def test_colour_modes():
    rgba = np.array([[[200, 100, 50, 128], [10, 20, 30, 255]]], dtype=np.uint8)  # (1, 2, 4)
    loaded = load_image(_save(Image.fromarray(rgba), "PNG"))
    assert loaded.original_mode == "RGBA"
    # Over black: round(c * alpha / 255).
    np.testing.assert_array_equal(loaded.rgb, [[[100, 50, 25], [10, 20, 30]]])
    la = Image.fromarray(np.array([[[200, 255], [200, 0]]], dtype=np.uint8), mode="LA")
    np.testing.assert_array_equal(load_image(_save(la, "PNG")).rgb[0, :, 0], [200, 0])
    palette = Image.fromarray(np.array([[0, 1, 2]], dtype=np.uint8), mode="P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    loaded = load_image(_save(palette, "PNG"))
    assert loaded.original_mode == "P"
    np.testing.assert_array_equal(loaded.rgb[0], [[255, 0, 0], [0, 255, 0], [0, 0, 255]])
    palette.info["transparency"] = 1
    transparent = load_image(_save(palette, "PNG", transparency=1))
    np.testing.assert_array_equal(transparent.rgb[0], [[255, 0, 0], [0, 0, 0], [0, 0, 255]])
    cmyk = load_image(_save(Image.new("CMYK", (8, 6), (0, 255, 255, 0)), "JPEG"))
    assert (cmyk.source_format, cmyk.original_mode, cmyk.rgb.shape) == ("jpeg", "CMYK", (6, 8, 3))
    assert cmyk.rgb[..., 0].min() > 230 and cmyk.rgb[..., 1:].max() < 25


@pytest.mark.parametrize(("fmt", "name"), [("BMP", "bmp"), ("WEBP", "webp"), ("GIF", "gif")])
def test_other_formats(fmt, name):
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[:, 3:] = 255
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    loaded = load_image(_save(Image.fromarray(rgb), fmt, **kwargs), filename="x.jpg")
    assert loaded.source_format == name  # detected from the bytes, not the name
    np.testing.assert_array_equal(loaded.rgb, rgb)


def test_animated_gif_and_apng_first_frame():
    red = Image.new("RGB", (5, 4), (255, 0, 0))
    green = Image.new("RGB", (5, 4), (0, 255, 0))
    blue = Image.new("RGB", (5, 4), (0, 0, 255))
    for fmt in ("GIF", "PNG"):
        data = _save(red, fmt, save_all=True, append_images=[green, blue], duration=100)
        loaded = load_image(data)
        assert loaded.rgb[0, 0].tolist() == [255, 0, 0]
        assert "the file has 3 frames; the first is shown" in loaded.notes


def test_exif_orientation_applied():
    image = Image.new("RGB", (20, 10), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    loaded = load_image(_save(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert (loaded.height_px, loaded.width_px) == (20, 10)
    assert loaded.rgb[2, 5, 0] > 200 and loaded.rgb[2, 5, 2] < 60  # top is the red half
    assert loaded.rgb[17, 5, 2] > 200 and loaded.rgb[17, 5, 0] < 60
    assert "EXIF orientation 6 applied" in loaded.notes


def test_bad_files_have_clear_errors():
    with pytest.raises(UserInputError, match=r"^'empty.png' is empty \(0 bytes\)"):
        load_image(b"", filename="empty.png")
    with pytest.raises(UserInputError, match="^'notes.png' is not an image"):
        load_image(b"These are my notes, not a picture.\n" * 10, filename="notes.png")
    with pytest.raises(UserInputError, match="^The file is not an image"):
        load_image(b"\x00" * 600)
    noise = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    png = _save(Image.fromarray(noise), "PNG")
    with pytest.raises(UserInputError, match="truncated or corrupt PNG file"):
        load_image(png[: len(png) // 2])
    with pytest.raises(UserInputError, match="header is corrupt"):
        load_image(png[:20])
    with pytest.raises(UserInputError, match=r"is 0\.0 MB; the limit is 0\.0 MB"):
        load_image(png, max_bytes=100)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_limits_checked_before_decoding():
    with pytest.raises(
        UserInputError,
        match=r"^'bomb.png' is 30000x30000 pixels \(900.0 megapixels\); the limit is 67.1 megapixels",
    ):
        load_image(_png_header_only(30000, 30000), filename="bomb.png")
    with pytest.raises(UserInputError, match=r"is 9000x9000 pixels \(81.0 megapixels\)"):
        load_image(_png_header_only(9000, 9000))
    # Within our pixel budget, but over the longest side the model takes.
    with pytest.raises(UserInputError, match="10000x10000 pixels; the model takes at most 8192"):
        load_image(_png_header_only(10000, 10000), max_pixels=200_000_000)
    # Formats without a header parser of ours: Pillow's own bomb limit still stops them.
    gif = b"GIF89a" + struct.pack("<HHBBB", 15000, 15000, 0, 0, 0)
    gif += b"," + struct.pack("<HHHHB", 0, 0, 15000, 15000, 0) + b"\x02\x02\x44\x01\x00;"
    with pytest.raises(UserInputError, match="too many to open safely"):
        load_image(gif, max_pixels=200_000_000)
    with pytest.raises(UserInputError, match="is 3x2 pixels"):
        load_image(_save(Image.new("L", (3, 2)), "PNG"), max_pixels=5)
    tiny = load_image(_save(Image.new("L", (1, 1), 7), "PNG"), max_pixels=1)
    assert tiny.rgb.tolist() == [[[7, 7, 7]]]


def test_window_argument():
    png = _save(Image.new("L", (2, 2)), "PNG")
    assert "window 'lung' ignored: windows apply to DICOM and NIfTI only" in (
        load_image(png, window="lung").notes
    )
    with pytest.raises(UserInputError, match="Unknown window 'brain'; choose one of"):
        load_image(png, window="brain")


def test_sha256_and_detect_format():
    assert image_sha256(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert detect_format(_save(Image.new("L", (2, 2)), "TIFF")) == "tiff"
    assert detect_format(b"GIF89a" + b"\x00" * 10) == "gif"
    assert detect_format(b"plain text") is None


# DICOM.


def _dicom(pixels: np.ndarray, *, preamble: bool = True, with_pixels: bool = True, **tags) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = pixels.shape[-2], pixels.shape[-1]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    for key, value in tags.items():
        setattr(ds, key, value)
    if with_pixels:
        ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=preamble)
    return buffer.getvalue()


def _window(hu: np.ndarray, name: str) -> np.ndarray:
    width, level = WINDOW_PRESETS[name]
    return np.round(np.clip((hu - (level - width / 2)) / width, 0, 1) * 255).astype(np.uint8)


def test_dicom_ct_rescale_and_windows():
    hu = np.array([[-1000, 40], [240, -60], [-600, 1000]], dtype=np.int16)  # (3, 2)
    data = _dicom((hu + 1024).astype(np.int16))  # stored values; intercept -1024
    loaded = load_image(data, filename="ct.dcm")
    assert (loaded.source_format, loaded.modality_hint) == ("dicom", "CT")
    assert loaded.original_mode == "MONOCHROME2 16-bit"
    # Soft tissue: [-160, 240] -> 0..255, so -1000 -> 0, 40 -> 127.5 -> 128, -60 -> 63.75 -> 64.
    np.testing.assert_array_equal(loaded.rgb[..., 0], [[0, 128], [255, 64], [0, 255]])
    assert loaded.notes == ["window: soft_tissue (W 400, L 40)"]
    lung = load_image(data, window="lung")
    np.testing.assert_array_equal(lung.rgb[..., 0], _window(hu.astype(float), "lung"))
    assert lung.rgb[2, 0, 0] == 128  # -600 is the lung level
    assert "window: lung (W 1500, L -600)" in lung.notes


def test_dicom_mr_auto_window_and_monochrome1():
    values = np.arange(100, dtype=np.int16).reshape(10, 10)
    data = _dicom(values, Modality="MR", RescaleIntercept=0)
    loaded = load_image(data)
    lo, hi = np.percentile(values, [1, 99])
    expected = np.round(np.clip((values - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(loaded.rgb[..., 0], expected)
    assert loaded.modality_hint == "MR"
    assert loaded.notes[0].startswith("window: auto 1st-99th percentile")
    inverted = load_image(
        _dicom(values, Modality="MR", RescaleIntercept=0, PhotometricInterpretation="MONOCHROME1")
    )
    np.testing.assert_array_equal(inverted.rgb[..., 0], 255 - expected)


def test_dicom_colour_multiframe_and_no_preamble():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    loaded = load_image(_dicom_rgb(rgb))
    np.testing.assert_array_equal(loaded.rgb, rgb)
    frames = np.stack([np.full((4, 5), 1064 + 500 * k, dtype=np.int16) for k in range(3)])
    multi = load_image(_dicom(frames, NumberOfFrames=3))
    assert multi.rgb.shape == (4, 5, 3)
    assert (multi.rgb == 128).all()  # the first frame: 40 HU at the soft tissue level
    assert "the DICOM file has 3 frames; the first is shown" in multi.notes
    bare = _dicom(np.full((2, 2), 1064, dtype=np.int16), preamble=False)
    assert bare[128:132] != b"DICM"
    # Found by its first element (group 0008), whatever the name, and read with force=True.
    assert detect_format(bare) == "dicom"
    assert (load_image(bare, filename="scan.bin").rgb == 128).all()
    assert (load_image(bare, filename="scan.dcm").rgb == 128).all()


def _dicom_rgb(rgb: np.ndarray) -> bytes:
    pixels = np.ascontiguousarray(rgb)
    data = _dicom(
        pixels[..., 0],
        with_pixels=False,
        SamplesPerPixel=3,
        PhotometricInterpretation="RGB",
        PlanarConfiguration=0,
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
        PixelRepresentation=0,
        Modality="XC",
        PixelData=pixels.tobytes(),
    )
    return data


def test_dicom_errors():
    with pytest.raises(UserInputError, match="^The DICOM file has no pixel data.$"):
        load_image(_dicom(np.zeros((2, 2), dtype=np.int16), with_pixels=False))
    huge = _dicom(np.zeros((1, 2), dtype=np.int16), Rows=10000, Columns=10000)
    with pytest.raises(UserInputError, match=r"is 10000x10000 pixels"):
        load_image(huge)
    with pytest.raises(UserInputError, match="DICOM"):
        load_image(b"\x00" * 128 + b"DICM" + b"\xff\x13garbage" * 5)


# NIfTI.


def _nifti(array: np.ndarray, affine: np.ndarray | None = None, gz: bool = False) -> bytes:
    image = nib.Nifti1Image(array, np.eye(4) if affine is None else affine)
    data = image.to_bytes()
    return gzip.compress(data) if gz else data


def _marked_volume() -> np.ndarray:
    volume = np.zeros((4, 5, 6), dtype=np.float32)  # (X, Y, Z) in RAS voxel order
    volume[0, 4, 3] = 100.0  # patient's far left, most anterior, middle slice
    volume[3, 0, 3] = 50.0
    return volume


def test_load_volume_and_slice_orientation():
    nifti2 = nib.Nifti2Image(_marked_volume(), np.eye(4)).to_bytes()
    assert detect_format(nifti2) == "nifti"
    np.testing.assert_array_equal(load_volume(nifti2)[0], _marked_volume())
    volume, info = load_volume(_nifti(_marked_volume(), gz=True))
    assert volume.shape == (4, 5, 6) and volume.dtype == np.float32
    assert info["shape"] == (4, 5, 6) and info["ndim"] == 3 and info["notes"] == []
    axial = slice_volume(volume, 2, 3)
    assert axial.shape == (5, 4)  # rows = Y (anterior first), cols = X (patient right first)
    assert axial[0, 3] == 100.0 and axial[4, 0] == 50.0
    # The same anatomy stored LPS (x and y flipped) is reoriented to the same display.
    lps = _marked_volume()[::-1, ::-1, :].copy()
    volume_lps, _ = load_volume(_nifti(lps, affine=np.diag([-1.0, -1.0, 1.0, 1.0])))
    np.testing.assert_array_equal(slice_volume(volume_lps, 2, 3), axial)
    with pytest.raises(UserInputError, match="Slice 6 is out of range: axis 2 has slices 0 to 5"):
        slice_volume(volume, 2, 6)
    with pytest.raises(UserInputError, match="axis must be 0, 1 or 2"):
        slice_volume(volume, 3, 0)


def test_load_image_nifti_defaults_and_ct_window():
    ct = np.full((6, 7, 9), -1000.0, dtype=np.float32)
    ct[2:4, 2:5, :] = 40.0
    loaded = load_image(_nifti(ct.astype(np.int16), gz=True), filename="ct.nii.gz")
    assert (loaded.source_format, loaded.modality_hint) == ("nifti", "CT")
    assert loaded.rgb.shape == (7, 6, 3)
    assert "slice 4 of 9 along axis 2" in loaded.notes
    assert "window: soft_tissue (W 400, L 40)" in loaded.notes
    assert loaded.original_mode == "int16 (6, 7, 9)"
    assert int((loaded.rgb[..., 0] == 128).sum()) == 6 and int(loaded.rgb.max()) == 128
    sagittal = load_image(_nifti(ct), nifti_axis=0, nifti_slice=0)
    assert sagittal.rgb.shape == (9, 7, 3)
    with pytest.raises(UserInputError, match="Slice 20 is out of range"):
        load_image(_nifti(ct), nifti_slice=20)


def test_nifti_4d_5d_2d_and_percentile():
    four = np.zeros((4, 5, 6, 2), dtype=np.float32)
    four[..., 0] = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    four[..., 1] = 1000.0
    volume, info = load_volume(_nifti(four))
    assert volume.shape == (4, 5, 6) and volume.max() == 4 * 5 * 6 - 1
    assert "the NIfTI file has 2 volumes; the first is used" in info["notes"]
    loaded = load_image(_nifti(four))
    plane = slice_volume(volume, 2, 3).astype(np.float64)
    lo, hi = np.percentile(plane, [1, 99])
    expected = np.round(np.clip((plane - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(loaded.rgb[..., 0], expected)
    assert loaded.modality_hint is None
    with pytest.raises(UserInputError, match="has 5 dimensions"):
        load_image(_nifti(np.zeros((2, 2, 2, 2, 2), dtype=np.float32)))
    flat = np.arange(12, dtype=np.float32).reshape(3, 4)
    two = load_image(_nifti(flat))
    assert two.rgb.shape == (4, 3, 3)
    assert "2-D NIfTI image: shown as is" in two.notes


def test_nifti_corrupt():
    noise = np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32)
    data = _nifti(noise, gz=True)
    with pytest.raises(UserInputError, match="^The .nii.gz file is truncated"):
        load_image(data[: len(data) // 2])
    with pytest.raises(UserInputError, match="gzip-compressed but holds no complete NIfTI"):
        load_image(data[:30], filename="scan.nii.gz")
    with pytest.raises(UserInputError, match="gzip-compressed"):
        load_image(gzip.compress(b"hello" * 200))
    raw = _nifti(_marked_volume())
    with pytest.raises(UserInputError, match="^The NIfTI file is truncated or damaged"):
        load_image(raw[:400])


# DICOM detection: pydicom's own test files (shipped inside the package, no download).


def _pydicom_file(name: str) -> bytes:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom ships {name}"
    with open(path, "rb") as fh:
        return fh.read()


@pytest.mark.parametrize(
    ("name", "size_hw", "modality"),
    [
        ("CT_small.dcm", (128, 128), "CT"),
        ("MR_small.dcm", (64, 64), "MR"),
        ("MR_small_implicit.dcm", (64, 64), "MR"),
        ("MR_small_bigendian.dcm", (64, 64), "MR"),
        ("JPEG2000.dcm", (1024, 256), None),
    ],
)
def test_pydicom_files_with_a_tiff_preamble_are_dicom(name, size_hw, modality):
    import pydicom

    data = _pydicom_file(name)
    assert data[128:132] == b"DICM"
    if name != "JPEG2000.dcm":
        assert data[:4] == b"II*\x00"  # the preamble is a TIFF header
    assert detect_format(data) == "dicom"
    try:
        loaded = load_image(data, filename=name)
    except UserInputError as error:  # JPEG 2000 needs an optional decoder plugin
        assert name == "JPEG2000.dcm" and "could not be decoded" in str(error)
        return
    assert (loaded.source_format, loaded.height_px, loaded.width_px) == ("dicom", *size_hw)
    ds = pydicom.dcmread(io.BytesIO(data))
    assert loaded.modality_hint == (modality or str(ds.get("Modality", "")) or None)
    if name == "CT_small.dcm":
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(loaded.rgb[..., 0], _window(hu, "soft_tissue"))


def test_tiff_header_in_the_preamble_of_our_own_dicom():
    hu = np.array([[-1000, 40], [240, -60]], dtype=np.int16)
    plain = _dicom((hu + 1024).astype(np.int16))
    tiff = _save(Image.new("L", (4, 4), 9), "TIFF")[:128]
    data = tiff.ljust(128, b"\0") + plain[128:]
    assert detect_format(data) == "dicom"
    loaded = load_image(data, filename="scan.tif")
    np.testing.assert_array_equal(loaded.rgb[..., 0], [[0, 128], [255, 64]])


def test_dicom_without_preamble_is_read_with_force():
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(_pydicom_file("CT_small.dcm")))
    buffer = io.BytesIO()
    ds.preamble = None
    ds.save_as(buffer, enforce_file_format=False)
    bare = buffer.getvalue()
    assert bare[128:132] != b"DICM" and not bare.startswith(b"II*")
    assert detect_format(bare) == "dicom"
    loaded = load_image(bare, filename="upload")
    np.testing.assert_array_equal(loaded.rgb, load_image(_pydicom_file("CT_small.dcm")).rgb)
    # A DICOM-like start that pydicom cannot read is still a clear DICOM error.
    with pytest.raises(UserInputError, match="DICOM"):
        load_image(b"\x08\x00\x05\x00CS" + b"\xff" * 30)


def test_dicom_size_limits_before_decoding():
    frames = np.zeros((3, 4, 5), dtype=np.int16)
    data = _dicom(frames, NumberOfFrames=3)
    with pytest.raises(
        UserInputError, match=r"holds 3x4x5 16-bit voxels \(0 million, 0.00 GB decoded\)"
    ):
        load_image(data, max_volume_voxels=59)
    assert load_image(data, max_volume_voxels=60).rgb.shape == (4, 5, 3)
    thin = _dicom(np.zeros((1, 30), dtype=np.int16))
    with pytest.raises(UserInputError, match=r"is 30x1 pixels, an aspect ratio of 30.0:1"):
        load_image(thin)


# Limits from headers: raster and NIfTI.


def test_extreme_aspect_ratio_refused_from_the_header():
    with pytest.raises(UserInputError, match=r"^'strip.png' is 1x100000 pixels, an aspect ratio"):
        load_image(_png_header_only(1, 100000), filename="strip.png")
    wide = _save(Image.new("L", (24, 1), 3), "PNG")
    assert load_image(wide).rgb.shape == (1, 24, 3)
    with pytest.raises(UserInputError, match=r"aspect ratio of 25.0:1; the model can use at most"):
        load_image(_save(Image.new("L", (25, 1), 3), "PNG"))
    assert load_image(_save(Image.new("L", (25, 1), 3), "PNG"), max_aspect_ratio=25).width_px == 25


def test_sixteen_bit_stretch_over_several_blocks_matches_the_formula():
    values = (np.arange(1500 * 800, dtype=np.uint32) * 7919 % 65536).astype(np.uint16)
    values = values.reshape(800, 1500)  # 1.2 M values: more than one mapping block
    loaded = load_image(_save(Image.fromarray(values), "PNG"))
    lo, hi = float(values.min()), float(values.max())
    expected = np.round((values.astype(np.float64) - lo) / (hi - lo) * 255.0).astype(np.uint8)
    np.testing.assert_array_equal(loaded.rgb[..., 0], expected)


def _gz_header_only(shape: tuple[int, ...], dtype=np.int16) -> bytes:
    """A .nii.gz whose header declares ``shape`` but whose voxel data is missing."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    return gzip.compress(header.binaryblock + b"\0" * 4)


def test_nifti_voxel_budget_checked_from_the_header():
    # The data is missing, so only a check made before decompressing can give this message.
    with pytest.raises(
        UserInputError,
        match=r"^The NIfTI file holds 512x512x1024 int16 voxels \(268 million, 0.54 GB "
        r"decoded\); the limit is 134 million voxels",
    ):
        load_image(_gz_header_only((512, 512, 1024)), max_volume_voxels=512 * 512 * 512)
    with pytest.raises(UserInputError, match=r"holds 8x8x4x3 float32 voxels"):
        load_volume(
            _nifti(np.zeros((8, 8, 4, 3), np.float32)), budget=PixelBudget(max_volume_voxels=700)
        )
    with pytest.raises(UserInputError, match="^The .nii.gz file is truncated"):
        load_image(_gz_header_only((8, 8, 8)))
    ok = load_image(_nifti(np.zeros((8, 8, 4, 3), np.float32), gz=True), max_volume_voxels=768)
    assert ok.rgb.shape == (8, 8, 3)


def test_nifti_slice_aspect_ratio_checked_per_axis():
    volume = np.zeros((100, 60, 3), np.float32)
    data = _nifti(volume, gz=True)
    assert load_image(data, nifti_axis=2).rgb.shape == (60, 100, 3)
    with pytest.raises(
        UserInputError,
        match=r"^The NIfTI slice across axis 0 is 60x3 pixels, an aspect ratio of 20.0:1",
    ):
        load_image(data, nifti_axis=0, max_aspect_ratio=10)


def test_nifti_trailing_bytes_are_not_decompressed():
    data = _nifti(_marked_volume())
    padded = gzip.compress(data + b"\0" * 5_000_000)
    volume, _ = load_volume(padded)
    np.testing.assert_array_equal(volume, _marked_volume())
