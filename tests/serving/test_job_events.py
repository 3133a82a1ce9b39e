"""Job notices: a waiting page wakes when a job changes, and sees its answer as it streams."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from serving.job_events import (
    TEXT_INTERVAL_S,
    JobEvents,
    RedisPublisher,
    RedisRelay,
    Throttled,
    changed_within,
)


def test_a_notice_from_another_thread_wakes_the_waiter_at_once():
    events = JobEvents()

    async def wait() -> tuple[bool, float, bool]:
        async with events.subscribe("job-1") as changed:
            threading.Timer(0.05, events.publish, args=("job-1",)).start()
            start = time.perf_counter()
            woke = await changed_within(changed, 5.0)
            elapsed = time.perf_counter() - start
            # Cleared for the next change: without a notice it now times out.
            again = await changed_within(changed, 0.05)
        return woke, elapsed, again

    woke, elapsed, again = asyncio.run(wait())
    assert woke and elapsed < 1.0 and not again


def test_notices_for_other_jobs_and_after_leaving_do_not_wake():
    events = JobEvents()

    async def wait() -> bool:
        async with events.subscribe("job-1") as changed:
            events.publish("job-2")
            return await changed_within(changed, 0.1)

    assert asyncio.run(wait()) is False
    events.publish("job-1")  # nobody subscribed any more: nothing to do, no error
    assert not events._waiters


def test_a_change_before_the_wait_is_not_missed():
    events = JobEvents()

    async def wait() -> bool:
        async with events.subscribe("job-1") as changed:
            events.publish("job-1")  # e.g. the job ended while the page read it
            await asyncio.sleep(0)  # the notice is delivered through the loop
            return await changed_within(changed, 0.01)

    assert asyncio.run(wait()) is True


def test_run_job_sends_a_notice_when_it_starts_and_when_it_ends(sqlite_url, make_platform):
    from serving.execution import run_job
    from serving.models import JobStatus
    from tests.serving.test_jobs import _setup

    platform = make_platform(sqlite_url)
    actor, session_id = _setup(platform)
    view = platform.ask(actor=actor, session_id=session_id, question="what?", regions=[])
    seen: list[str] = []
    original = platform.ctx.events.publish
    platform.ctx.events.publish = lambda job_id, **kw: (seen.append(job_id), original(job_id, **kw))

    async def wait() -> tuple[bool, JobStatus | None]:
        async with platform.ctx.events.subscribe(view.id) as changed:
            worker = asyncio.to_thread(run_job, view.id, ctx=platform.ctx)
            status = await worker
            return await changed_within(changed, 1.0), status

    woke, status = asyncio.run(wait())
    assert woke and status is JobStatus.succeeded
    assert seen[0] == seen[-1] == view.id and len(seen) >= 2  # running, ..., final


def test_text_is_kept_while_followed_and_dropped_after():
    events = JobEvents()
    events.publish("job-1", text="ignored")  # nobody follows it: nothing is kept

    async def follow() -> tuple[str | None, int, int]:
        async with events.subscribe("job-1") as changed:
            assert events.text("job-1") is None
            before = events.state("job-1")
            events.publish("job-1", text="The liver")
            events.publish("job-1", text="The liver is")
            woke = await changed_within(changed, 1.0)
            assert woke and events.state("job-1") == before  # text is no state change
            events.publish("job-1")
            return events.text("job-1"), before, events.state("job-1")

    text, before, after = asyncio.run(follow())
    assert text == "The liver is" and after == before + 1
    assert events.text("job-1") is None and events.state("job-1") == 0


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None]] = []

    def publish(self, job_id: str, *, text: str | None = None) -> None:
        self.sent.append((job_id, text))


def test_throttled_text_sends_at_most_one_notice_per_interval_and_the_last_one():
    recorder = _Recorder()
    stream = Throttled(recorder, "job-1")
    for n in range(1, 51):  # 50 tokens at once, as a fast model would
        stream.text("w " * n)
    stream.flush()
    texts = [t for _, t in recorder.sent]
    assert 2 <= len(texts) <= 3, texts
    assert texts[0] == "w " and texts[-1] == "w " * 50
    time.sleep(TEXT_INTERVAL_S * 1.5)
    stream.text("later")
    assert recorder.sent[-1] == ("job-1", "later")  # after the interval it goes at once


def test_embedded_job_streams_growing_text_before_its_answer(sqlite_url, make_platform):
    from serving.execution import run_job
    from serving.predictors import NoopPredictor
    from serving.services.turns import job_view
    from tests.serving.test_jobs import _setup

    platform = make_platform(sqlite_url, predictor=NoopPredictor(0.6))
    actor, session_id = _setup(platform)
    view = platform.ask(actor=actor, session_id=session_id, question="what?", regions=[])

    async def follow() -> list[str]:
        seen: list[str] = []
        async with platform.events.subscribe(view.id) as changed:
            worker = asyncio.ensure_future(asyncio.to_thread(run_job, view.id, ctx=platform.ctx))
            while not worker.done():
                await changed_within(changed, 0.05)
                text = platform.events.text(view.id)
                if text and (not seen or seen[-1] != text):
                    seen.append(text)
            await worker
        return seen

    seen = asyncio.run(follow())
    answer = platform.call(job_view, job_id=view.id)
    assert answer.status.value == "succeeded"
    final = "noop answer to: what?"
    assert len(seen) >= 3, seen  # several partial texts, each a growing prefix of the answer
    assert all(final.startswith(t) for t in seen) and seen[-1] == final
    assert [len(t) for t in seen] == sorted(len(t) for t in seen)


@pytest.mark.integration
def test_worker_notices_reach_a_web_process_through_redis(redis_url):
    events = JobEvents()
    relay = RedisRelay(redis_url, events)
    relay.start()
    try:
        assert relay.connected.wait(10) and events.live
        publisher = RedisPublisher(redis_url)

        async def follow() -> tuple[bool, str | None, int]:
            async with events.subscribe("job-9") as changed:
                publisher.publish("job-9", text="A mass in")
                woke = await changed_within(changed, 5.0)
                text = events.text("job-9")
                publisher.publish("job-9")
                await changed_within(changed, 5.0)
                return woke, text, events.state("job-9")

        woke, text, state = asyncio.run(follow())
        assert woke and text == "A mass in" and state == 1
    finally:
        relay.stop()


def test_an_unreachable_redis_costs_the_notices_only():
    events = JobEvents()
    relay = RedisRelay("redis://127.0.0.1:1/0", events, retry_s=0.05)  # nothing listens there
    relay.start()
    try:
        deadline = time.monotonic() + 5
        while events.live and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not events.live and not relay.connected.is_set()
    finally:
        relay.stop()
    publisher = RedisPublisher("redis://127.0.0.1:1/0")
    start = time.perf_counter()
    publisher.publish("job-1", text="x")  # logs, does not raise
    publisher.publish("job-1", text="xy")  # quiet for a while: no second timeout
    assert time.perf_counter() - start < 3.0
