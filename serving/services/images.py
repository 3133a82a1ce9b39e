"""Image ingest: validate an upload, keep the original bytes, derive the display PNG."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medplib.errors import UserInputError
from medplib.imageio import LoadedImage, image_sha256, load_image
from serving.models import Image
from serving.services.errors import InvalidInput, NotFound, Unavailable
from serving.services.validation import check_text, safe_text, well_formed_id
from serving.settings import Settings
from serving.store import ArtefactStore

# Formats whose display image depends on viewing choices (window, axis, slice).
_VIEWED = {"dicom", "nifti"}


@cache
def _decode_slots(limit: int) -> threading.BoundedSemaphore:
    # One pool per limit: settings are fixed per process, but tests build several.
    return threading.BoundedSemaphore(limit)


@contextmanager
def decode_slot(settings: Settings) -> Iterator[None]:
    """Hold one of `Settings.max_concurrent_decodes` slots: decoding is what costs memory."""
    slots = _decode_slots(settings.max_concurrent_decodes)
    if not slots.acquire(timeout=settings.decode_wait_s):
        raise Unavailable(
            "The server is busy reading other uploads; nothing was saved, so try again in a minute."
        )
    try:
        yield
    finally:
        slots.release()


def decode_upload(
    data: bytes,
    *,
    settings: Settings,
    filename: str | None = None,
    window: str | None = None,
    nifti_axis: int = 2,
    nifti_slice: int | None = None,
) -> LoadedImage:
    """Decode an upload within the settings' size limits (call it holding a `decode_slot`)."""
    try:
        return load_image(
            data,
            filename=filename,
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
            max_volume_voxels=settings.max_volume_voxels,
            max_aspect_ratio=settings.max_aspect_ratio,
            window=window,
            nifti_axis=nifti_axis,
            nifti_slice=nifti_slice,
        )
    except UserInputError as exc:
        raise InvalidInput(str(exc)) from None


def ingest_image(
    db: Session,
    *,
    store: ArtefactStore,
    settings: Settings,
    data: bytes,
    filename: str | None = None,
    window: str | None = None,
    nifti_axis: int = 2,
    nifti_slice: int | None = None,
) -> Image:
    """Store an uploaded image once (deduplicated by content) and return its row.

    DICOM windows and NIfTI slices give different display images from the same bytes, so
    the content address covers the bytes plus those choices. The row is shared by everyone
    who uploads the same bytes, so ``filename`` (used to read the file and in messages) is
    not stored on it: it belongs to the uploader's session (`create_session`).
    """
    filename = safe_text(filename, max_chars=255) or None
    if window is not None:
        check_text(window, what="window", max_chars=32)
    if not data:
        raise InvalidInput("The file is empty (0 bytes); choose an image file.")
    if len(data) > settings.max_upload_bytes:  # before waiting for a slot
        raise InvalidInput(
            f"The file is {len(data) / 1e6:.1f} MB; the limit is "
            f"{settings.max_upload_bytes / 1e6:.1f} MB."
        )
    with decode_slot(settings):  # the decoded arrays live only inside the slot
        loaded = decode_upload(
            data,
            settings=settings,
            filename=filename,
            window=window,
            nifti_axis=nifti_axis,
            nifti_slice=nifti_slice,
        )
        view = f"|window={window}|axis={nifti_axis}|slice={nifti_slice}".encode()
        sha = image_sha256(data + view if loaded.source_format in _VIEWED else data)
        existing = db.scalar(select(Image).where(Image.sha256 == sha))
        if existing is not None:
            return existing
        png = io.BytesIO()
        PILImage.fromarray(loaded.rgb).save(png, format="PNG")
        notes, modality = list(loaded.notes), loaded.modality_hint
        source_format, width_px, height_px = (
            loaded.source_format,
            loaded.width_px,
            loaded.height_px,
        )
        del loaded
    suffix = f".{source_format}" if source_format.isalnum() else ""
    image = Image(
        sha256=sha,
        original_key=store.put(data, kind="images", suffix=suffix[:9]),
        display_key=store.put(png.getvalue(), kind="images", suffix=".png"),
        source_format=source_format,
        modality=modality,
        width_px=width_px,
        height_px=height_px,
        byte_size=len(data),
        notes=notes,
    )
    try:
        # A savepoint: a concurrent upload of the same bytes wins the race harmlessly.
        with db.begin_nested():
            db.add(image)
    except IntegrityError:
        winner = db.scalar(select(Image).where(Image.sha256 == sha))
        if winner is None:
            raise
        return winner
    return image


def rerender_image(
    db: Session,
    *,
    store: ArtefactStore,
    settings: Settings,
    image_id: str,
    window: str | None = None,
    nifti_axis: int = 2,
    nifti_slice: int | None = None,
    filename: str | None = None,
) -> Image:
    """The same uploaded file shown another way (DICOM/NIfTI window, NIfTI axis or slice).

    Read from the stored original, so it works on any session at any time (the browser's
    temporary upload is long gone by then); the result is an image row of its own.
    ``filename`` is the caller's name for the file, if it has one.
    """
    source = _image(db, image_id)
    return ingest_image(
        db,
        store=store,
        settings=settings,
        data=store.get(source.original_key),
        filename=filename,
        window=window,
        nifti_axis=nifti_axis,
        nifti_slice=nifti_slice,
    )


def original_bytes(db: Session, *, store: ArtefactStore, image_id: str) -> bytes:
    """The file as it was uploaded (to size a volume's slices before re-rendering it)."""
    return store.get(_image(db, image_id).original_key)


def _image(db: Session, image_id: str) -> Image:
    image = db.get(Image, image_id) if well_formed_id(image_id) else None
    if image is None:
        raise NotFound("That image does not exist any more; upload the file again.")
    return image


def load_display(store: ArtefactStore, display_key: str) -> np.ndarray:
    """The image the model sees: (H, W, 3) uint8 RGB at original size."""
    with PILImage.open(io.BytesIO(store.get(display_key))) as im:
        return np.asarray(im.convert("RGB"))
