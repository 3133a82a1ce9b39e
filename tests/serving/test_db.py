"""Transactions on SQLite behave as they do on PostgreSQL for read-then-write work."""

from __future__ import annotations

import threading
import time

from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from serving.db import make_engine, transaction


def test_concurrent_read_then_write_transactions_lose_no_update(tmp_path):
    # The job runner claims a job (read queued, write running) while a request may cancel it
    # (read queued, write cancelled): neither may overwrite the other unseen.
    engine = make_engine(f"sqlite:///{tmp_path / 'race.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE counter (n INTEGER NOT NULL)")
        conn.exec_driver_sql("INSERT INTO counter (n) VALUES (0)")
    factory = sessionmaker(bind=engine)

    def increment() -> None:
        with transaction(factory) as db:
            seen = db.execute(text("SELECT n FROM counter")).scalar_one()
            time.sleep(0.05)  # the window another transaction would slip into
            db.execute(text("UPDATE counter SET n = :n"), {"n": seen + 1})

    threads = [threading.Thread(target=increment) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM counter")).scalar_one() == 5


def test_a_failed_transaction_on_sqlite_keeps_nothing(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'rollback.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE item (name TEXT NOT NULL)")
    factory = sessionmaker(bind=engine)
    try:
        with transaction(factory) as db:
            db.execute(text("INSERT INTO item (name) VALUES ('kept?')"))
            raise RuntimeError("stop half-way")
    except RuntimeError:
        pass
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM item")).scalar_one() == 0
