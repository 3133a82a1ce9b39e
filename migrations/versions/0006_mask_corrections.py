"""corrected versions of returned masks

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mask_corrections",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("mask_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("author_id", sa.String(length=32), nullable=True),
        sa.Column("rle", sa.JSON(), nullable=False),
        sa.Column("png_key", sa.String(length=128), nullable=False),
        sa.Column("area_px", sa.Integer(), nullable=False),
        sa.Column("bbox_xyxy_px", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"],
            ["users.id"],
            name=op.f("fk_mask_corrections_author_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["mask_id"],
            ["masks.id"],
            name=op.f("fk_mask_corrections_mask_id_masks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mask_corrections")),
        sa.UniqueConstraint("mask_id", "version", name=op.f("uq_mask_corrections_mask_id")),
    )
    op.create_index(
        op.f("ix_mask_corrections_author_id"), "mask_corrections", ["author_id"], unique=False
    )
    op.create_index(
        op.f("ix_mask_corrections_mask_id"), "mask_corrections", ["mask_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_mask_corrections_mask_id"), table_name="mask_corrections")
    op.drop_index(op.f("ix_mask_corrections_author_id"), table_name="mask_corrections")
    op.drop_table("mask_corrections")
