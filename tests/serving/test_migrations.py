from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from serving.db import make_engine
from serving.migrate import alembic_config
from serving.models import Base


def test_upgrade_downgrade_upgrade(database_url):
    cfg = alembic_config(database_url)
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    engine = make_engine(database_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    command.upgrade(cfg, "head")
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    with engine.connect() as conn:
        # The migrations describe exactly the models: nothing left to autogenerate.
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    engine.dispose()


def test_old_anonymous_users_keep_their_sessions_under_a_hashed_secret(database_url):
    """A browser of the old scheme (username "anon-<key>") still finds its sessions."""
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from serving.models import User
    from serving.services.accounts import anonymous_actor
    from serving.services.sessions import list_sessions

    cfg = alembic_config(database_url)
    command.upgrade(cfg, "0002")
    engine = make_engine(database_url)
    key = "0123456789abcdef0123456789abcdef"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, username, role, anonymous, created_at) "
                "VALUES ('u1', :name, 'user', :yes, CURRENT_TIMESTAMP)"
            ),
            {"name": f"anon-{key}", "yes": True},
        )
        conn.execute(
            text(
                "INSERT INTO images (id, sha256, original_key, display_key, source_format, "
                "width_px, height_px, byte_size, notes, created_at) VALUES ('i1', 'h', 'o', "
                "'d', 'png', 4, 4, 10, '[]', CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO sessions (id, owner_id, image_id, title, visibility, regions, "
                "created_at, updated_at) VALUES ('s1', 'u1', 'i1', 'old', 'private', '[]', "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
    command.upgrade(cfg, "head")
    with Session(engine) as db:
        user = db.get(User, "u1")
        assert (
            user is not None and key not in user.username and key not in (user.display_name or "")
        )
        assert user.browser_secret_sha256 not in (None, key)
        actor = anonymous_actor(db, browser_secret=key)
        assert actor.user_id == "u1"
        assert [s.id for s in list_sessions(db, actor=actor)] == ["s1"]
    command.downgrade(cfg, "0002")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sessions")).scalar() == 1
    engine.dispose()
