"""Service functions the web app needs that `worker.services` does not offer (yet).

Each one is a thin composition of existing service checks; move it into the services when
they grow the same function.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from worker.services.accounts import Actor
from worker.services.sessions import get_own_session, validate_regions


def set_session_regions(
    db: Session, *, actor: Actor, session_id: str, regions: Any, max_regions: int
) -> list[dict[str, Any]]:
    """Replace the regions drawn on one of the actor's sessions (what a reopen restores).

    Same rules as `create_session`: owner only, geometry validated against the image.
    """
    session = get_own_session(db, actor=actor, session_id=session_id)
    session.regions = validate_regions(regions, image=session.image, max_regions=max_regions)
    return list(session.regions)
