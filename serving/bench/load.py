"""`medplib bench load`: many users at once, through the same services the web app calls.

Each simulated user has an account, uploads an image, opens a private session and asks
questions one after another, waiting for each answer. Reported: completed / failed /
lost jobs, end-to-end latency percentiles, throughput, and cross-user leaks (a user who
can list or open another user's private session).
"""

from __future__ import annotations

import io
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image as PILImage

from serving.bench.queue import _final_rows, running_stack
from serving.bench.stats import summary_ms
from serving.models import JobStatus, Role
from serving.platform import Platform
from serving.services.accounts import Actor, create_user
from serving.services.errors import NotFound, ServiceError
from serving.services.images import ingest_image
from serving.services.sessions import create_session, get_session, list_sessions


def _image(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    PILImage.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _user(platform: Platform, index: int) -> tuple[Actor, str]:
    def body(db: Any) -> tuple[Actor, str]:
        name = f"load-{index}-{uuid.uuid4().hex[:6]}"
        actor = Actor(user_id=create_user(db, username=name, password=None, role=Role.user).id)
        image = ingest_image(
            db, store=platform.store, settings=platform.settings, data=_image(index)
        )
        return actor, create_session(db, actor=actor, image_id=image.id, title=name).id

    return platform.call(body)


def run_load(platform: Platform, *, users: int, jobs: int, timeout_s: float) -> dict[str, Any]:
    people = [_user(platform, i) for i in range(users)]
    per_user = [jobs // users + (1 if i < jobs % users else 0) for i in range(users)]
    latencies: list[float] = []
    outcome = {"completed": 0, "failed": 0, "lost": 0, "rejected": 0}
    lock = threading.Lock()

    def user_loop(i: int) -> None:
        actor, session_id = people[i]
        region = [{"kind": "box", "xyxy_px": [4, 4, 20 + i % 30, 20]}]
        for k in range(per_user[i]):
            start = time.perf_counter()
            try:
                view = platform.ask(
                    actor=actor, session_id=session_id, question=f"user {i} q{k}", regions=region
                )
            except ServiceError:
                with lock:
                    outcome["rejected"] += 1
                continue
            # Polling like the UI does (a few times a second), not in a tight loop.
            row = _final_rows(platform, [view.id], timeout_s, poll_s=0.05)[view.id]
            with lock:
                if row.status is JobStatus.succeeded:
                    outcome["completed"] += 1
                    latencies.append(time.perf_counter() - start)
                elif row.status.final:
                    outcome["failed"] += 1
                else:
                    outcome["lost"] += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=users) as pool:
        list(pool.map(user_loop, range(users)))
    elapsed = time.perf_counter() - started
    return {
        "users": users,
        "jobs": jobs,
        **outcome,
        "latency": summary_ms(latencies),
        "throughput_jobs_per_s": round(outcome["completed"] / elapsed, 2),
        "wall_s": round(elapsed, 2),
        "cross_user_leaks": _leaks(platform, people),
    }


def _leaks(platform: Platform, people: list[tuple[Actor, str]]) -> int:
    """Each user lists their sessions and tries to open everyone else's: both must fail."""
    leaks = 0
    own = {actor.user_id: session_id for actor, session_id in people}
    for actor, _ in people:
        listed = {s.id for s in platform.call(list_sessions, actor=actor)}
        leaks += len(listed - {own[actor.user_id]})
        for other, session_id in people:
            if other.user_id == actor.user_id:
                continue
            try:
                platform.call(get_session, actor=actor, session_id=session_id)
                leaks += 1
            except NotFound:
                pass
    return leaks


def run(args: Any) -> dict[str, Any]:
    results = []
    modes = ["embedded"] + (["distributed"] if args.broker_url else [])
    for mode in modes:
        with running_stack(
            mode,
            postgres_admin_url=args.postgres_url,
            broker_url=args.broker_url,
            workers=args.workers,
            noop_delay_s=args.model_seconds,
        ) as platform:
            results.append(
                {
                    "mode": mode,
                    **run_load(platform, users=args.users, jobs=args.jobs, timeout_s=120.0),
                }
            )
    return {
        "benchmark": "load",
        "model_seconds": args.model_seconds,
        "cpu_count": os.cpu_count(),
        "results": results,
    }
