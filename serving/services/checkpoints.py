"""Named checkpoints: the settings say which exist, an admin picks among them.

The picks (where new questions go, which checkpoints the arena draws from) are rows of
`AdminChoice`, so every web process sees the same and a restart keeps them. A pick naming a
checkpoint the settings no longer list is ignored, with a note, rather than sending
questions to a queue nobody serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from serving.models import AdminChoice, Role
from serving.services.accounts import Actor, require
from serving.services.errors import InvalidInput
from serving.settings import Settings

DEFAULT_KEY = "default_checkpoint"
ARENA_KEY = "arena_checkpoints"


@dataclass(frozen=True)
class CheckpointChoices:
    available: list[str]  # every checkpoint the settings name, in their order
    default: str  # where new questions go
    arena: list[str]  # what arena matches draw their two sides from
    default_chosen: bool  # False: the settings' default (no admin has picked one)
    arena_chosen: bool  # False: every available checkpoint
    notes: list[str] = field(default_factory=list)


def checkpoint_choices(db: Session, *, settings: Settings) -> CheckpointChoices:
    available = list(settings.checkpoint_registry)
    notes: list[str] = []
    picked = _stored(db, DEFAULT_KEY)
    default_chosen = isinstance(picked, str) and picked in available
    if picked is not None and not default_chosen:
        notes.append(
            f"The chosen default checkpoint {picked!r} is no longer in the settings; "
            f"new questions go to {settings.default_checkpoint!r}."
        )
    arena = available
    stored_arena = _stored(db, ARENA_KEY)
    arena_chosen = False
    if isinstance(stored_arena, list):
        kept = [name for name in stored_arena if name in available]
        if len(kept) >= 2:
            arena, arena_chosen = kept, True
        else:
            notes.append(
                "Fewer than two of the arena's chosen checkpoints are still in the settings; "
                "the arena uses every checkpoint."
            )
    return CheckpointChoices(
        available=available,
        default=picked if default_chosen else settings.default_checkpoint,
        arena=arena,
        default_chosen=default_chosen,
        arena_chosen=arena_chosen,
        notes=notes,
    )


def default_checkpoint(db: Session, *, settings: Settings) -> str:
    """Where a new question goes: the admin's pick, else the settings' default."""
    picked = _stored(db, DEFAULT_KEY)
    if isinstance(picked, str) and picked in settings.checkpoint_registry:
        return picked
    return settings.default_checkpoint


def known_checkpoint(name: Any, *, settings: Settings) -> str:
    """``name`` if the settings list it; otherwise refused, naming those that exist."""
    available = list(settings.checkpoint_registry)
    if not isinstance(name, str) or name not in available:
        shown = repr(name) if isinstance(name, str) else "that"
        raise InvalidInput(
            f"There is no checkpoint {shown[:80]}; this deployment has {', '.join(available)}."
        )
    return name


def set_checkpoints(
    db: Session,
    *,
    actor: Actor,
    settings: Settings,
    default: Any = None,
    arena: Any = None,
) -> CheckpointChoices:
    """Admins: pick the default checkpoint and/or the arena's (None leaves one as it is).

    Everything is checked before anything is stored: a refused pick changes nothing.
    """
    require(actor, Role.admin)
    updates: dict[str, Any] = {}
    if default is not None:
        updates[DEFAULT_KEY] = known_checkpoint(default, settings=settings)
    if arena is not None:
        if not isinstance(arena, list):
            raise InvalidInput("The arena's checkpoints must be a list of names.")
        names = list(dict.fromkeys(known_checkpoint(n, settings=settings) for n in arena))
        if len(names) < 2:
            raise InvalidInput("The arena needs at least two different checkpoints.")
        updates[ARENA_KEY] = names
    if not updates:
        raise InvalidInput("Choose a default checkpoint or the arena's checkpoints.")
    for key, value in updates.items():
        row = db.get(AdminChoice, key, with_for_update=True)
        if row is None:
            try:
                # A savepoint: two admins making the first pick at once is one pick, the last.
                with db.begin_nested():
                    db.add(AdminChoice(key=key, value=value, updated_by_id=actor.user_id))
                continue
            except IntegrityError:
                row = db.get(AdminChoice, key, with_for_update=True, populate_existing=True)
                assert row is not None
        row.value, row.updated_by_id = value, actor.user_id
    db.flush()
    return checkpoint_choices(db, settings=settings)


def _stored(db: Session, key: str) -> Any:
    row = db.get(AdminChoice, key)
    return None if row is None else row.value
