"""file names belong to sessions, not shared images; new anonymous users counted per address

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_images = sa.table(
    "images",
    sa.column("id", sa.String),
    sa.column("filename", sa.String),
    sa.column("created_at", sa.DateTime),
)
# An upload writes the image row and its uploader's session in one request; a session made
# later on the same bytes is someone else's de-duplicated upload (or a class copy).
UPLOADER_WINDOW = timedelta(minutes=5)
_sessions = sa.table(
    "sessions",
    sa.column("id", sa.String),
    sa.column("image_id", sa.String),
    sa.column("forked_from_id", sa.String),
    sa.column("created_at", sa.DateTime),
    sa.column("filename", sa.String),
)


def upgrade() -> None:
    # Plain ADD COLUMN (no batch rebuild: with foreign keys on, rebuilding users or sessions
    # on SQLite could cascade into their rows).
    op.add_column("users", sa.Column("created_from", sa.String(length=64), nullable=True))
    op.create_index(op.f("ix_users_created_from"), "users", ["created_from"], unique=False)
    op.add_column("sessions", sa.Column("filename", sa.String(length=255), nullable=True))
    # An image row is shared by everyone who uploaded the same bytes, and held the first
    # uploader's file name. The name goes to the first session on the image if it was made
    # with the image (the uploader's; if they deleted it, nobody else inherits the name) and
    # to the forks copied from it; everyone else's sessions get none.
    conn = op.get_bind()
    names = {
        image_id: (name, created_at)
        for image_id, name, created_at in conn.execute(
            sa.select(_images.c.id, _images.c.filename, _images.c.created_at).where(
                _images.c.filename.is_not(None)
            )
        )
    }
    given: dict[str, str | None] = {}
    claimed: set[str] = set()
    rows = conn.execute(
        sa.select(
            _sessions.c.id, _sessions.c.image_id, _sessions.c.forked_from_id, _sessions.c.created_at
        ).order_by(_sessions.c.created_at, _sessions.c.id)
    ).all()
    for session_id, image_id, forked_from_id, created_at in rows:
        name = None
        if forked_from_id is not None and forked_from_id in given:
            name = given[forked_from_id]
        elif forked_from_id is None and image_id not in claimed:
            claimed.add(image_id)
            if image_id in names and _made_together(names[image_id][1], created_at):
                name = names[image_id][0]
        given[session_id] = name
        if name is not None:
            conn.execute(
                _sessions.update().where(_sessions.c.id == session_id).values(filename=name)
            )
    conn.execute(_images.update().values(filename=None))


def _made_together(image_at: datetime | None, session_at: datetime | None) -> bool:
    if image_at is None or session_at is None:
        return False
    # SQLite hands back naive UTC datetimes, PostgreSQL aware ones.
    image_at, session_at = (
        t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo else t
        for t in (image_at, session_at)
    )
    return abs(session_at - image_at) <= UPLOADER_WINDOW


def downgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(_sessions.c.image_id, _sessions.c.filename)
        .where(_sessions.c.filename.is_not(None), _sessions.c.forked_from_id.is_(None))
        .order_by(_sessions.c.created_at.desc())
    ).all()
    for image_id, name in rows:  # oldest last, so the first session's name wins
        conn.execute(_images.update().where(_images.c.id == image_id).values(filename=name))
    op.drop_column("sessions", "filename")
    op.drop_index(op.f("ix_users_created_from"), table_name="users")
    op.drop_column("users", "created_from")
