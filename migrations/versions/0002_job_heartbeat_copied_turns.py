"""job heartbeat; turns copied into forks

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("turns", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("copied", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    # Before this revision a fork's copied turns were recognisable only as answered turns
    # without a job; nothing else writes an answer without one.
    op.execute(
        sa.text(
            "UPDATE turns SET copied = :yes WHERE answer IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.turn_id = turns.id)"
        ).bindparams(yes=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("turns", schema=None) as batch_op:
        batch_op.drop_column("copied")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("heartbeat_at")
