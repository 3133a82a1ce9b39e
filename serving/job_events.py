"""Notices that a job changed, and its answer so far, so a waiting page need not poll.

The database stays the record of truth: a notice says only "job X changed" (re-read it) or
"job X's answer so far is T" (display only; the stored answer replaces it at the end). A
page that reconnects, or misses notices, reads the job from the database and goes on.

Embedded mode: the runner's thread publishes straight into the web process's
:class:`JobEvents`. Distributed mode: a worker publishes on Redis (:class:`RedisPublisher`)
and each web process relays the channel into its own :class:`JobEvents`
(:class:`RedisRelay`). When the relay is down, waiters learn it from :attr:`JobEvents.live`
and fall back to reading the database at a short interval.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

CHANNEL = "medplib:job-events"
# Text notices are display-only; publishing each token of a fast model would cost more than
# the model. One notice per interval keeps the stream smooth to the eye.
TEXT_INTERVAL_S = 0.03


class Publisher(Protocol):
    def publish(self, job_id: str, *, text: str | None = None) -> None: ...


@dataclass(eq=False)  # each waiter is its own set member
class _Waiter:
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)


class JobEvents:
    """Wake asyncio waiters (the web app's event loop) from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[_Waiter]] = defaultdict(set)
        self._text: dict[str, str] = {}
        self._state: dict[str, int] = {}  # job id -> count of "changed" notices
        # False while the notices of jobs run elsewhere cannot arrive (the relay is down).
        self.live = True

    def publish(self, job_id: str, *, text: str | None = None) -> None:
        """Say that ``job_id`` changed (``text`` None) or that its answer so far is ``text``."""
        with self._lock:
            waiting = self._waiters.get(job_id)
            if not waiting:
                return  # nobody follows this job here: keep nothing
            if text is None:
                self._state[job_id] = self._state.get(job_id, 0) + 1
            else:
                self._text[job_id] = text
            waiters = list(waiting)
        for waiter in waiters:
            try:
                waiter.loop.call_soon_threadsafe(waiter.event.set)
            except RuntimeError:  # that page's loop has closed; nothing to wake
                pass

    def text(self, job_id: str) -> str | None:
        """The answer so far, while someone follows the job."""
        with self._lock:
            return self._text.get(job_id)

    def state(self, job_id: str) -> int:
        """A counter that moves on every "changed" notice: re-read the job when it moves."""
        with self._lock:
            return self._state.get(job_id, 0)

    @asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set on each notice for ``job_id`` while the block runs.

        Subscribe before reading the job, so a change between the read and the wait is not
        missed. :func:`changed_within` clears it.
        """
        waiter = _Waiter(asyncio.get_running_loop())
        with self._lock:
            self._waiters[job_id].add(waiter)
        try:
            yield waiter.event
        finally:
            with self._lock:
                self._waiters[job_id].discard(waiter)
                if not self._waiters[job_id]:
                    del self._waiters[job_id]
                    self._text.pop(job_id, None)
                    self._state.pop(job_id, None)


async def changed_within(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for a notice (True) or the timeout (False), and clear the event for the next."""
    try:
        await asyncio.wait_for(event.wait(), timeout_s)
        return True
    except asyncio.TimeoutError:  # the builtin TimeoutError only from Python 3.11
        return False
    finally:
        event.clear()


class Throttled:
    """Text notices at most every ``TEXT_INTERVAL_S``; "changed" notices and the last text
    always go out."""

    def __init__(self, publisher: Publisher, job_id: str) -> None:
        self._publisher, self._job_id = publisher, job_id
        self._last_s = 0.0
        self._pending: str | None = None

    def text(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last_s < TEXT_INTERVAL_S:
            self._pending = text
            return
        self._last_s, self._pending = now, None
        self._publisher.publish(self._job_id, text=text)

    def flush(self) -> None:
        if self._pending is not None:
            self._publisher.publish(self._job_id, text=self._pending)
            self._pending = None


class RedisPublisher:
    """A worker's side: notices go out on Redis pub/sub; an outage costs only the notices."""

    def __init__(self, url: str) -> None:
        import redis

        self._client: Any = redis.Redis.from_url(
            url, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        self._quiet_until = 0.0

    def publish(self, job_id: str, *, text: str | None = None) -> None:
        if time.monotonic() < self._quiet_until:
            return  # Redis failed a moment ago: do not slow the model with more timeouts
        message = json.dumps({"job": job_id, "text": text})
        try:
            self._client.publish(CHANNEL, message)
        except Exception as exc:  # noqa: BLE001 - any broker error: the pages read the database
            log.warning("job %s: event not published (%s)", job_id, exc)
            self._quiet_until = time.monotonic() + 5.0


class RedisRelay:
    """A web process's side: a thread that passes the workers' notices into ``events``."""

    def __init__(self, url: str, events: JobEvents, *, retry_s: float = 1.0) -> None:
        self._url, self._events, self._retry_s = url, events, retry_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="job-event-relay", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        import redis

        while not self._stop.is_set():
            pubsub = None
            try:
                client = redis.Redis.from_url(self._url, socket_connect_timeout=2.0)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                self._events.live = True
                self.connected.set()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None:
                        self._deliver(message.get("data"))
            except Exception as exc:  # noqa: BLE001 - any broker error: wait and reconnect
                if self._events.live:
                    log.warning("job events from workers paused: %s", exc)
                self._events.live = False
                self.connected.clear()
                self._stop.wait(self._retry_s)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001 - closing a broken connection
                        pass

    def _deliver(self, data: Any) -> None:
        try:
            notice = json.loads(data)
            job_id = str(notice["job"])
            text = notice.get("text")
        except (TypeError, ValueError, KeyError):
            return  # not ours
        self._events.publish(job_id, text=None if text is None else str(text))
