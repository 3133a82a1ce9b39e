"""DICOM windows and NIfTI slices through the upload handler (the original bytes are kept)."""

from __future__ import annotations

import gzip
import io

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from serving.models import Image
from tests.webapp.helpers import browser, run_ask, settled, uploaded
from webapp.handlers import upload
from webapp.handlers.screen import canvas_values

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _ct_dicom(hu: np.ndarray) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = (hu + 1024).astype(np.int16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_dicom_window_choice_rereads_the_same_file(web, tmp_path):
    hu = np.full((32, 48), -600, dtype=np.int16)  # lung tissue everywhere
    hu[:, 24:] = 40  # soft tissue on the right half
    path = tmp_path / "slice.dcm"
    path.write_bytes(_ct_dicom(hu))
    first = uploaded(web, str(path))
    assert first["nifti_box"]["visible"] is False and "DICOM" in first["image_info"]
    soft = canvas_values(web, first["view"])["prompter"]["value"]["image"]
    # Soft-tissue window (default for CT): lung is black, soft tissue mid-grey.
    assert soft[0, 0, 0] == 0 and 100 < soft[0, 40, 0] < 160
    lung = upload.upload(web, None, "lung", 2, 0, first["view"], [], new_file=False)
    assert "lung" in lung["image_info"] and lung["view"]["image_id"] != first["view"]["image_id"]
    lung_image = canvas_values(web, lung["view"])["prompter"]["value"]["image"]
    assert 0 < lung_image[0, 0, 0] < 255 and lung_image[0, 40, 0] > lung_image[0, 0, 0]

    def originals(db):
        return sorted({row.original_key for row in db.query(Image)})

    # Two display versions, one original file in the store.
    (key,) = web.call(originals)
    assert web.platform.store.get(key) == path.read_bytes()


def test_nifti_shows_the_slice_picker_and_reads_the_chosen_slice(web, tmp_path):
    volume = np.zeros((16, 12, 8), dtype=np.float32)  # (X, Y, Z)
    for z in range(8):
        volume[:, :, z] = z * 10.0  # each axial slice has its own brightness
    path = tmp_path / "brain.nii.gz"
    path.write_bytes(gzip.compress(nib.Nifti1Image(volume, np.eye(4)).to_bytes()))
    first = uploaded(web, str(path))
    assert first["nifti_box"]["visible"] is True
    assert first["nifti_slice"]["maximum"] == 7 and first["nifti_slice"]["value"] == 4
    assert "slice 4 of 8" in first["image_info"]
    other = upload.upload(web, None, "default", 2, 1, first["view"], [], new_file=False)
    assert "slice 1 of 8" in other["image_info"]
    assert (other["view"]["width_px"], other["view"]["height_px"]) == (16, 12)
    sagittal = upload.upload(web, None, "default", 0, 99, other["view"], [], new_file=False)
    assert sagittal["nifti_slice"]["maximum"] == 15 and "slice 15 of 16" in sagittal["image_info"]


def test_window_and_slice_apply_after_a_question_too(web, tmp_path):
    hu = np.full((32, 48), -600, dtype=np.int16)
    hu[:, 24:] = 700  # bone on the right half
    path = tmp_path / "chest.dcm"
    path.write_bytes(_ct_dicom(hu))
    actor = browser(web, "w" * 32)["actor"]
    first = uploaded(web, str(path))
    asked = settled(run_ask(web, "What is shown?", None, None, first["view"], actor))
    assert asked["view"]["session_id"] and asked["status"] == "answered"
    # The browser's temporary upload is gone by now: the stored original is re-read.
    path.unlink()
    bone = upload.upload(web, None, "bone", 2, 0, asked["view"], [], new_file=False)
    assert "bone" in bone["image_info"] and "new conversation" in bone["status"]
    assert bone["view"]["image_id"] != asked["view"]["image_id"] and bone["chat"] == []
    shown = canvas_values(web, bone["view"])["prompter"]["value"]["image"]
    # Bone window (W 1800, L 400): bone light grey, not the saturated white of soft tissue.
    assert 150 < shown[0, 40, 0] < 255 and shown[0, 0, 0] < shown[0, 40, 0]
    # A question on it is asked on the image as shown, and its session records that image.
    again = settled(run_ask(web, "And now?", None, None, bone["view"], actor))
    assert again["view"]["image_id"] == bone["view"]["image_id"]
    assert again["view"]["session_id"] != asked["view"]["session_id"]
