"""The benchmarks run end to end at a small size (their numbers are recorded, not asserted)."""

from __future__ import annotations

from serving.bench.load import run_load
from serving.bench.queue import measure, running_stack
from serving.bench.stats import percentile, summary_ms


def test_percentile_matches_linear_interpolation():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10], 99) == 10
    assert summary_ms([0.001, 0.002, 0.003])["p50_ms"] == 2.0


def test_queue_and_load_benchmarks_complete_on_the_embedded_stack():
    with running_stack("embedded", postgres_admin_url="", broker_url="") as platform:
        queue = measure(platform, jobs=5)
        assert queue["completed"] == 10 and queue["lost"] == 0
        assert queue["overhead"]["n"] == 5
        load = run_load(platform, users=3, jobs=7, timeout_s=30)
    assert (load["completed"], load["failed"], load["lost"]) == (7, 0, 0)
    assert load["cross_user_leaks"] == 0
