"""In-process notice that a job changed, so a waiting page does not have to poll for it.

The database stays the record of truth: a notice carries only the job id, and whoever is
woken reads the job again. Jobs run in another process (Celery workers) send no notice here,
so waiters keep a timeout and fall back to reading the database at that pace.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class JobEvents:
    """Wake asyncio waiters (the web app's event loop) from the job runner's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = (
            defaultdict(set)
        )

    def publish(self, job_id: str) -> None:
        """Say that ``job_id`` changed (status, phase or progress); safe from any thread."""
        with self._lock:
            waiters = list(self._waiters.get(job_id, ()))
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that page's loop has closed; nothing to wake
                pass

    @asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set on each change of ``job_id`` while the block runs; clear it after use.

        Subscribe before reading the job, so a change between the read and the wait is not
        missed.
        """
        key = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters[job_id].add(key)
        try:
            yield key[1]
        finally:
            with self._lock:
                self._waiters[job_id].discard(key)
                if not self._waiters[job_id]:
                    del self._waiters[job_id]


async def changed_within(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for a notice (True) or the timeout (False), and clear the event for the next."""
    try:
        await asyncio.wait_for(event.wait(), timeout_s)
        return True
    except asyncio.TimeoutError:  # the builtin TimeoutError only from Python 3.11
        return False
    finally:
        event.clear()
