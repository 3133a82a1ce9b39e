"""masks keep the mirror check's agreement

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable with no backfill: an earlier answer's mirror decode was never kept.
    with op.batch_alter_table("masks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mirror_agreement", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("masks", schema=None) as batch_op:
        batch_op.drop_column("mirror_agreement")
