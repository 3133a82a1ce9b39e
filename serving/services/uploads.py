"""Uploads as a front end sees them: the stored image under the uploader's own file name,
and, for API clients, a new session on it in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from serving.services.accounts import Actor
from serving.services.images import ingest_image, rerender_image
from serving.services.sessions import create_session
from serving.settings import Settings
from serving.store import ArtefactStore
from serving.views import ImageData, image_data


def upload_image(
    db: Session,
    *,
    store: ArtefactStore,
    settings: Settings,
    data: bytes,
    filename: str | None = None,
    window: str | None = None,
    nifti_axis: int = 2,
    nifti_slice: int | None = None,
) -> ImageData:
    image = ingest_image(
        db,
        store=store,
        settings=settings,
        data=data,
        filename=filename,
        window=window,
        nifti_axis=nifti_axis,
        nifti_slice=nifti_slice,
    )
    return image_data(image, filename)


def show_image_as(
    db: Session,
    *,
    store: ArtefactStore,
    settings: Settings,
    image_id: str,
    window: str | None = None,
    nifti_axis: int = 2,
    nifti_slice: int | None = None,
    filename: str | None = None,
) -> ImageData:
    """An uploaded image with another window, axis or slice (see `rerender_image`)."""
    image = rerender_image(
        db,
        store=store,
        settings=settings,
        image_id=image_id,
        window=window,
        nifti_axis=nifti_axis,
        nifti_slice=nifti_slice,
        filename=filename,
    )
    return image_data(image, filename)


@dataclass(frozen=True)
class NewSession:
    session_id: str
    image: ImageData


def start_session(
    db: Session,
    *,
    actor: Actor,
    store: ArtefactStore,
    settings: Settings,
    data: bytes,
    filename: str | None = None,
    title: str = "",
    window: str | None = None,
    nifti_axis: int = 2,
    nifti_slice: int | None = None,
) -> NewSession:
    """Store an upload and open a session of the actor's on it."""
    image = ingest_image(
        db,
        store=store,
        settings=settings,
        data=data,
        filename=filename,
        window=window,
        nifti_axis=nifti_axis,
        nifti_slice=nifti_slice,
    )
    session = create_session(db, actor=actor, image_id=image.id, title=title, filename=filename)
    return NewSession(session_id=session.id, image=image_data(image, session.filename))
