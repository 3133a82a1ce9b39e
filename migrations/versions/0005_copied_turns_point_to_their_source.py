"""copied turns point to the answer they came from

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_sessions = sa.table(
    "sessions",
    sa.column("id", sa.String),
    sa.column("forked_from_id", sa.String),
    sa.column("created_at", sa.DateTime),
)
_turns = sa.table(
    "turns",
    sa.column("id", sa.String),
    sa.column("session_id", sa.String),
    sa.column("index", sa.Integer),
    sa.column("question", sa.Text),
    sa.column("answer", sa.Text),
    sa.column("answered_at", sa.DateTime),
    sa.column("copied", sa.Boolean),
    sa.column("source_turn_id", sa.String),
)


def upgrade() -> None:
    conn = op.get_bind()
    # On SQLite a batch rebuild (a foreign key cannot be added in place with a name SQLite
    # reports back); migrations/env.py turns foreign keys off for it, so nothing cascades.
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("source_turn_id", sa.String(length=32), nullable=True))
        batch.create_foreign_key(
            batch.f("fk_turns_source_turn_id_turns"),
            "turns",
            ["source_turn_id"],
            ["id"],
            ondelete="SET NULL",
        )
    op.create_index(op.f("ix_turns_source_turn_id"), "turns", ["source_turn_id"], unique=False)
    # A copy was made from the answered turn of the session it was forked from that has the same
    # question, answer and answer time; forks of forks point on to the first answer.
    parents = dict(
        conn.execute(
            sa.select(_sessions.c.id, _sessions.c.forked_from_id)
            .where(_sessions.c.forked_from_id.is_not(None))
            .order_by(_sessions.c.created_at, _sessions.c.id)
        ).all()
    )
    key = (_turns.c.question, _turns.c.answer, _turns.c.answered_at)
    source_of: dict[str, str] = {}  # copied turn id -> first answer's id
    for session_id, parent_id in parents.items():  # oldest fork first: parents are resolved
        originals: dict[tuple, str] = {}
        for turn_id, *k in conn.execute(
            sa.select(_turns.c.id, *key)
            .where(_turns.c.session_id == parent_id, _turns.c.answer.is_not(None))
            .order_by(_turns.c.index.desc())
        ):
            originals[tuple(k)] = turn_id  # the lowest index wins on ties
        for turn_id, *k in conn.execute(
            sa.select(_turns.c.id, *key).where(
                _turns.c.session_id == session_id, _turns.c.copied.is_(True)
            )
        ):
            parent_turn = originals.get(tuple(k))
            if parent_turn is None:
                continue  # the parent's answer is gone: the copy stands on its own
            source = source_of.get(parent_turn, parent_turn)
            source_of[turn_id] = source
            conn.execute(
                _turns.update().where(_turns.c.id == turn_id).values(source_turn_id=source)
            )


def downgrade() -> None:
    op.drop_index(op.f("ix_turns_source_turn_id"), table_name="turns")
    with op.batch_alter_table("turns") as batch:
        batch.drop_constraint(batch.f("fk_turns_source_turn_id_turns"), type_="foreignkey")
        batch.drop_column("source_turn_id")
