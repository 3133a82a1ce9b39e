"""named checkpoints on jobs, admin choices, arena matches and votes

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable with no default: every job queued before names runs on the default checkpoint.
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("checkpoint", sa.String(length=64), nullable=True))
    op.create_table(
        "admin_choices",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_by_id", sa.String(length=32), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["updated_by_id"],
            ["users.id"],
            name=op.f("fk_admin_choices_updated_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_admin_choices")),
    )
    op.create_table(
        "arena_matches",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("started_by_id", sa.String(length=32), nullable=False),
        sa.Column("image_id", sa.String(length=32), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("regions", sa.JSON(), nullable=False),
        sa.Column("checkpoint_a", sa.String(length=64), nullable=False),
        sa.Column("checkpoint_b", sa.String(length=64), nullable=False),
        sa.Column("turn_a_id", sa.String(length=32), nullable=False),
        sa.Column("turn_b_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_arena_matches_image_id_images"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["started_by_id"],
            ["users.id"],
            name=op.f("fk_arena_matches_started_by_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["turn_a_id"],
            ["turns.id"],
            name=op.f("fk_arena_matches_turn_a_id_turns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["turn_b_id"],
            ["turns.id"],
            name=op.f("fk_arena_matches_turn_b_id_turns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_arena_matches")),
    )
    for column in ("image_id", "started_by_id", "turn_a_id", "turn_b_id"):
        op.create_index(op.f(f"ix_arena_matches_{column}"), "arena_matches", [column], unique=False)
    op.create_table(
        "arena_votes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("match_id", sa.String(length=32), nullable=False),
        sa.Column("voter_id", sa.String(length=32), nullable=False),
        sa.Column(
            "choice",
            sa.Enum("a", "b", "tie", "both_bad", name="arenachoice", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["match_id"],
            ["arena_matches.id"],
            name=op.f("fk_arena_votes_match_id_arena_matches"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["voter_id"],
            ["users.id"],
            name=op.f("fk_arena_votes_voter_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_arena_votes")),
        sa.UniqueConstraint("match_id", "voter_id", name=op.f("uq_arena_votes_match_id")),
    )
    for column in ("match_id", "voter_id"):
        op.create_index(op.f(f"ix_arena_votes_{column}"), "arena_votes", [column], unique=False)


def downgrade() -> None:
    for column in ("voter_id", "match_id"):
        op.drop_index(op.f(f"ix_arena_votes_{column}"), table_name="arena_votes")
    op.drop_table("arena_votes")
    for column in ("turn_b_id", "turn_a_id", "started_by_id", "image_id"):
        op.drop_index(op.f(f"ix_arena_matches_{column}"), table_name="arena_matches")
    op.drop_table("arena_matches")
    op.drop_table("admin_choices")
    # The arena's answers were ordinary turns and jobs: they stay, on the default checkpoint.
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("checkpoint")
