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


def test_copies_find_their_source_answer_and_a_rebuild_keeps_every_row(database_url, make_platform):
    """0005 rebuilds `turns` on SQLite: jobs, masks and ratings that reference it survive,
    and copies made before it (no source recorded) get the first answer as their source."""
    from sqlalchemy import text

    from serving.execution import run_job
    from serving.models import LinkKind, LinkRole, Role
    from serving.services.reviews import rate_turn
    from serving.services.shares import create_share_link, fork_session
    from tests.serving.test_shares_reviews import _answered_session, _user

    platform = make_platform(database_url)
    teacher = _user(platform, "teacher", Role.instructor)
    student, reviewer = _user(platform, "student"), _user(platform, "rev", Role.reviewer)
    case = _answered_session(platform, teacher, "first")
    _answered_session(platform, teacher, "other")
    _, token = platform.call(create_share_link, actor=teacher, session_id=case, kind=LinkKind.klass)
    copy = platform.call(fork_session, actor=student, token=token)
    view = platform.ask(actor=student, session_id=copy.id, question="own", regions=[])
    run_job(view.id, ctx=platform.ctx)
    _, fork_token = platform.call(
        create_share_link, actor=student, session_id=copy.id, role=LinkRole.fork
    )
    platform.call(fork_session, actor=teacher, token=fork_token)

    def sources(conn) -> dict[str, str | None]:
        rows = conn.execute(text("SELECT question, session_id, source_turn_id FROM turns"))
        ids = dict(conn.execute(text("SELECT session_id || question, id FROM turns")).all())
        return {
            f"{q}@{'case' if s == case else s[:6]}": next(
                (k for k, v in ids.items() if v == src), None
            )
            for q, s, src in rows
        }

    def counts(conn) -> list[int]:
        return [
            conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
            for t in ("turns", "jobs", "masks", "ratings")
        ]

    first = platform.call(
        lambda db: db.scalar(text("SELECT id FROM turns WHERE session_id = :s"), {"s": case})
    )
    platform.call(
        rate_turn, actor=reviewer, turn_id=first, text_score=4, text_correct=True,
        mask_verdicts=["good"],
    )  # fmt: skip
    engine = make_engine(database_url)
    with engine.connect() as conn:
        before, made = counts(conn), sources(conn)
    assert sum(v == f"{case}first" for v in made.values()) == 2  # the copy and its fork
    cfg = alembic_config(database_url)
    command.downgrade(cfg, "0004")
    with engine.connect() as conn:
        assert counts(conn) == before
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        assert counts(conn) == before == [6, 3, 4, 1]  # turns, jobs, masks, ratings
        assert sources(conn) == made  # the backfill finds what forking recorded
    engine.dispose()


def test_0007_adds_checkpoints_and_the_arena_and_goes_down_keeping_every_answer(
    database_url, tmp_path
):
    """Down to 0006 drops the arena and the admins' choices but no job, turn or mask (the
    arena's answers stay as ordinary answers); back up, every job is on the default."""
    from sqlalchemy import text

    from serving.execution import run_job
    from serving.invariants import check_invariants
    from serving.models import Role
    from serving.platform import build_platform
    from serving.services.arena import vote
    from serving.services.checkpoints import set_checkpoints
    from serving.settings import Settings
    from tests.serving.conftest import migrate
    from tests.serving.test_arena import _image, _user

    migrate(database_url)
    settings = Settings(
        database_url=database_url,
        artefact_dir=tmp_path / "artefacts",
        predictor="tests.serving.arena_models:stand_in",
        checkpoints="a=strong,b=weak",
    )
    platform = build_platform(settings)
    ana, root = _user(platform, "ana"), _user(platform, "root", Role.admin)
    platform.call(set_checkpoints, actor=root, settings=platform.settings, default="b")
    job = platform.ask(actor=ana, image_id=_image(platform), question="q", regions=[])
    started = platform.start_match(actor=ana, image_id=_image(platform), question="q")
    for job_id in (job.id, *started.job_ids):
        run_job(job_id, ctx=platform.ctx)
    platform.call(vote, actor=ana, match_id=started.match_id, choice="b")
    engine = make_engine(database_url)
    arena_tables = {"arena_matches", "arena_votes", "admin_choices"}

    def state() -> tuple[list[int], list[str | None]]:
        with engine.connect() as conn:
            counts = [
                conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
                for t in ("jobs", "turns", "masks", "sessions")
            ]
            names = inspect(conn).get_columns("jobs")
            column = [c["name"] for c in names if c["name"] == "checkpoint"]
            checkpoints = (
                sorted(conn.execute(text("SELECT checkpoint FROM jobs")).scalars(), key=str)
                if column
                else []
            )
        return counts, checkpoints

    before = state()
    assert before == ([3, 3, 3, 3], ["a", "b", "b"])
    cfg = alembic_config(database_url)
    command.downgrade(cfg, "0006")
    assert not arena_tables & set(inspect(engine).get_table_names())
    assert state() == (before[0], [])  # no checkpoint column, every row kept
    command.upgrade(cfg, "head")
    assert arena_tables <= set(inspect(engine).get_table_names())
    assert state() == (before[0], [None, None, None])  # NULL: the default checkpoint
    assert platform.call(lambda db: check_invariants(db, store=platform.store)) == []
    engine.dispose()


def test_an_upload_name_goes_only_to_the_session_made_with_the_image(database_url):
    """Before 0004 the shared image row held the first uploader's file name. If that
    uploader deleted their session, a later session on the same bytes (another user's
    de-duplicated upload) must not inherit the name; the uploader's session and its forks do."""
    from sqlalchemy import text

    cfg = alembic_config(database_url)
    command.upgrade(cfg, "0003")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, username, role, anonymous, created_at) VALUES "
                "('u1', 'alice', 'user', :no, :t0), ('u2', 'bob', 'user', :no, :t0)"
            ),
            {"no": False, "t0": "2026-01-01 09:00:00"},
        )
        for image, at in (("kept", "2026-01-01 10:00:00"), ("orphan", "2026-01-01 10:00:00")):
            conn.execute(
                text(
                    "INSERT INTO images (id, sha256, original_key, display_key, source_format, "
                    "width_px, height_px, byte_size, notes, filename, created_at) VALUES "
                    "(:i, :i, 'o', 'd', 'png', 4, 4, 10, '[]', :name, :at)"
                ),
                {"i": image, "name": f"patient-{image}.png", "at": at},
            )
        sessions = [
            # id, owner, image, forked from, created
            ("upload", "u1", "kept", None, "2026-01-01 10:00:01"),
            ("fork", "u2", "kept", "upload", "2026-01-02 08:00:00"),
            ("same-bytes", "u2", "kept", None, "2026-01-03 08:00:00"),
            ("later", "u2", "orphan", None, "2026-01-05 08:00:00"),  # uploader's was deleted
        ]
        for sid, owner, image, parent, at in sessions:
            conn.execute(
                text(
                    "INSERT INTO sessions (id, owner_id, image_id, title, visibility, regions, "
                    "forked_from_id, created_at, updated_at) VALUES (:s, :o, :i, '', "
                    "'private', '[]', :f, :at, :at)"
                ),
                {"s": sid, "o": owner, "i": image, "f": parent, "at": at},
            )
    command.upgrade(cfg, "0004")
    with engine.connect() as conn:
        names = dict(conn.execute(text("SELECT id, filename FROM sessions")).all())
        images = conn.execute(text("SELECT filename FROM images")).scalars().all()
    assert names == {
        "upload": "patient-kept.png",
        "fork": "patient-kept.png",
        "same-bytes": None,
        "later": None,
    }
    assert images == [None, None]
    engine.dispose()
