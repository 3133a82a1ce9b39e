"""Job notices: a waiting page wakes when the embedded runner changes a job."""

from __future__ import annotations

import asyncio
import threading
import time

from serving.job_events import JobEvents, changed_within


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
    platform.ctx.events.publish = lambda job_id: (seen.append(job_id), original(job_id))

    async def wait() -> tuple[bool, JobStatus | None]:
        async with platform.ctx.events.subscribe(view.id) as changed:
            worker = asyncio.to_thread(run_job, view.id, ctx=platform.ctx)
            status = await worker
            return await changed_within(changed, 1.0), status

    woke, status = asyncio.run(wait())
    assert woke and status is JobStatus.succeeded
    assert seen[0] == seen[-1] == view.id and len(seen) >= 2  # running, ..., final
