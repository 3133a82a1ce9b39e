"""anonymous browser secrets stored hashed, random anonymous usernames; login sessions

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LEGACY_PREFIX = "anon-"


def upgrade() -> None:
    # Plain ADD COLUMN and a unique index: no table rebuild, which on SQLite (foreign keys
    # on) could cascade into the sessions of the users being migrated.
    op.add_column("users", sa.Column("browser_secret_sha256", sa.String(length=64), nullable=True))
    op.add_column("users", sa.Column("display_name", sa.String(length=64), nullable=True))
    op.add_column("users", sa.Column("last_session_id", sa.String(length=32), nullable=True))
    op.create_index(
        op.f("ix_users_browser_secret_sha256"), "users", ["browser_secret_sha256"], unique=True
    )
    op.create_table(
        "login_sessions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("redeemed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_login_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_sessions")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_login_sessions_token_sha256")),
    )
    op.create_index(op.f("ix_login_sessions_user_id"), "login_sessions", ["user_id"], unique=False)
    # Anonymous users of the old scheme were named "anon-<browser key>": the key becomes
    # the (hashed) secret, so each browser keeps its sessions, and the name a random one
    # that no longer reveals it.
    conn = op.get_bind()
    users = sa.table(
        "users",
        sa.column("id", sa.String),
        sa.column("username", sa.String),
        sa.column("anonymous", sa.Boolean),
        sa.column("browser_secret_sha256", sa.String),
        sa.column("display_name", sa.String),
    )
    legacy = conn.execute(
        sa.select(users.c.id, users.c.username).where(
            users.c.anonymous.is_(True), users.c.username.like(f"{_LEGACY_PREFIX}%")
        )
    ).all()
    for user_id, username in legacy:
        key = username[len(_LEGACY_PREFIX) :]
        name = f"{_LEGACY_PREFIX}{secrets.token_hex(8)}"
        conn.execute(
            users.update()
            .where(users.c.id == user_id)
            .values(
                username=name,
                display_name=f"Anonymous {name[-6:]}",
                browser_secret_sha256=hashlib.sha256(key.encode()).hexdigest(),
            )
        )


def downgrade() -> None:
    # Hashes cannot be turned back into browser keys: after a downgrade, browsers of
    # anonymous users start afresh (their old sessions stay in the database).
    op.drop_index(op.f("ix_login_sessions_user_id"), table_name="login_sessions")
    op.drop_table("login_sessions")
    op.drop_index(op.f("ix_users_browser_secret_sha256"), table_name="users")
    # Plain DROP COLUMN (SQLite >= 3.35): a batch rebuild of users would drop the table,
    # and with foreign keys on that deletes every session with it.
    for column in ("last_session_id", "display_name", "browser_secret_sha256"):
        op.drop_column("users", column)
