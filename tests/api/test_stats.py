"""``Engine.stats()``: every field Catzilla documents, computed for real."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psutil
import pytest

from cytask import Engine, EngineStats, Priority, QueueFull, TaskTimeout, task
from cytask._stats import StatsSampler

CATZILLA_FIELDS = {
    "critical_queue_size", "high_queue_size", "normal_queue_size", "low_queue_size",
    "total_queued", "scheduled_tasks", "active_workers", "idle_workers", "total_workers",
    "total_tasks_processed", "failed_tasks", "retried_tasks", "cancelled_tasks", "error_rate",
    "tasks_per_second", "avg_execution_time_ms", "p95_execution_time_ms",
    "p99_execution_time_ms", "memory_usage_mb", "avg_worker_utilization", "queue_pressure",
    "uptime_seconds",
}  # fmt: skip


def test_every_documented_field_is_there(engine: Engine) -> None:
    stats = engine.stats()
    assert isinstance(stats, EngineStats)
    d = stats.as_dict()
    assert set(d) >= CATZILLA_FIELDS
    for name in CATZILLA_FIELDS:
        assert d[name] == getattr(stats, name)
    with pytest.raises(AttributeError):
        stats.total_queued = 5  # type: ignore[misc]  # a frozen snapshot


def test_queue_sizes_per_level_and_pressure(
    make_engine: Callable[..., Engine], gate: threading.Event
) -> None:
    eng = make_engine(workers=1, queue_size=64)
    started = threading.Event()
    eng.submit(lambda: (started.set(), gate.wait()))
    assert started.wait(10)
    counts = {Priority.CRITICAL: 2, Priority.HIGH: 3, Priority.NORMAL: 4, Priority.LOW: 5}
    for prio, n in counts.items():
        for _ in range(n):
            eng.add_task(int, priority=prio)
    s = eng.stats()
    assert (s.critical_queue_size, s.high_queue_size, s.normal_queue_size, s.low_queue_size) == (
        2,
        3,
        4,
        5,
    )
    assert s.total_queued == 14
    assert s.queue_pressure == pytest.approx(14 / (eng.queue_capacity * 4))
    assert (s.active_workers, s.idle_workers, s.total_workers) == (1, 0, 1)
    gate.set()
    eng.submit(int).result(timeout=30)  # FIFO in NORMAL: everything before it ran too
    eng.add_task(int, priority=Priority.LOW).result(timeout=30)
    s = eng.stats()
    assert s.total_queued == 0 and s.queue_pressure == 0.0


def test_active_and_idle_workers(make_engine: Callable[..., Engine], gate: threading.Event) -> None:
    eng = make_engine(workers=3)
    both_in = threading.Barrier(3, timeout=30)
    handles = [eng.submit(lambda: (both_in.wait(), gate.wait())) for _ in range(2)]
    both_in.wait()
    s = eng.stats()
    assert (s.active_workers, s.idle_workers, s.total_workers) == (2, 1, 3)
    gate.set()
    for h in handles:
        h.result(timeout=30)


def test_processed_failed_and_error_rate(engine: Engine) -> None:
    ok = [engine.submit(int, i) for i in range(30)]
    bad = [engine.submit(int, "x") for _ in range(10)]
    for h in ok + bad:
        h.wait(30)
    s = engine.stats()
    assert s.total_tasks_processed == 40
    assert s.failed_tasks == 10
    assert s.error_rate == pytest.approx(10 / 40)
    assert s.submitted_tasks == 40


def test_retried_and_scheduled(engine: Engine) -> None:
    @task(engine=engine, retries=3)
    def always() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        always.delay().result(timeout=30)
    later = [engine.add_task(int, delay=60) for _ in range(3)]
    s = engine.stats()
    assert s.retried_tasks == 3
    assert s.failed_tasks == 1  # one task failed, after four runs
    assert s.scheduled_tasks == 3
    for h in later:
        h.cancel()
    s = engine.stats()
    assert s.scheduled_tasks == 0
    assert s.cancelled_tasks == 3


def test_execution_time_percentiles_come_from_real_durations(
    make_engine: Callable[..., Engine],
) -> None:
    eng = make_engine(workers=1)
    # 196 no-ops and 4 tasks of >= 50 ms: p99 is a slow one, p95 a fast one
    handles = [eng.submit(int) for _ in range(196)] + [
        eng.submit(time.sleep, 0.05) for _ in range(4)
    ]
    for h in handles:
        h.result(timeout=30)
    s = eng.stats()
    # histogram buckets are within ~19% of the true duration
    assert s.p99_execution_time_ms >= 50 * 0.8
    assert s.p95_execution_time_ms < 50 * 0.8
    assert s.avg_execution_time_ms >= 4 * 50 / 200 * 0.99
    assert s.p95_execution_time_ms <= s.p99_execution_time_ms


def test_empty_engine_has_zero_rates(engine: Engine) -> None:
    s = engine.stats()
    assert s.error_rate == 0.0
    assert s.avg_execution_time_ms == 0.0 == s.p99_execution_time_ms
    assert s.total_tasks_processed == 0


def test_tasks_per_second_is_a_sliding_window() -> None:
    sampler = StatsSampler()
    assert sampler.rate(100.0, 0) == 0.0
    assert sampler.rate(105.0, 500) == pytest.approx(100.0)
    # 10 s later with nothing processed: the old burst has left the window
    assert sampler.rate(120.0, 500) == pytest.approx(0.0)
    assert sampler.rate(121.0, 600) == pytest.approx(100 / 16)
    # an average since the start would never fall back to zero
    s2 = StatsSampler()
    s2.rate(0.0, 0)
    s2.rate(1.0, 1000)
    assert s2.rate(12.0, 1000) == 0.0


def test_tasks_per_second_counts_real_work(engine: Engine) -> None:
    engine.stats()
    handles = [engine.submit(int) for _ in range(500)]
    for h in handles:
        h.result(timeout=30)
    assert engine.stats().tasks_per_second > 0


def test_memory_usage_is_the_process_rss(engine: Engine) -> None:
    rss_mb = psutil.Process().memory_info().rss / (1024 * 1024)
    assert engine.stats().memory_usage_mb == pytest.approx(rss_mb, rel=0.25)


def test_uptime_and_utilization(make_engine: Callable[..., Engine]) -> None:
    t0 = time.monotonic()
    eng = make_engine(workers=1)
    assert eng.stats().avg_worker_utilization == pytest.approx(0.0, abs=0.01)
    eng.submit(time.sleep, 0.1).result(timeout=30)
    s = eng.stats()
    assert 0.1 <= s.uptime_seconds <= time.monotonic() - t0
    # the only worker spent >= 0.1 s of its uptime in a task
    assert 0.1 / s.uptime_seconds * 0.99 <= s.avg_worker_utilization <= 1.0
    assert eng.stats().uptime_seconds >= s.uptime_seconds


def test_rejections_keep_error_rate_within_bounds(
    make_engine: Callable[..., Engine], gate: threading.Event
) -> None:
    # QueueFull rejections count as failed tasks; they never ran, so they are not
    # processed runs: error_rate used to be failed / processed and reached 6.0
    eng = make_engine(workers=1, queue_size=2, submit_timeout=0)
    started = threading.Event()
    eng.submit(lambda: (started.set(), gate.wait(30)))
    assert started.wait(30)
    rejected, accepted = 0, []
    for _ in range(14):
        try:
            accepted.append(eng.submit(int))
        except QueueFull:
            rejected += 1
    assert rejected == 12  # 2 slots
    s = eng.stats()
    assert s.failed_tasks == 12 and s.succeeded_tasks == 0
    assert s.error_rate == 1.0
    gate.set()
    for h in accepted:
        h.result(timeout=30)
    eng.submit(int).result(timeout=30)
    s = eng.stats()
    assert s.total_tasks_processed == 4 and s.succeeded_tasks == 4
    assert s.error_rate == pytest.approx(12 / 16)
    assert s.submitted_tasks == 16


def test_timeouts_keep_error_rate_within_bounds(
    make_engine: Callable[..., Engine], gate: threading.Event
) -> None:
    eng = make_engine(workers=1)

    @task(engine=eng, timeout=0.02)
    def stuck() -> None:
        gate.wait(30)

    handles = [stuck.delay() for _ in range(3)]
    for h in handles:  # each fails at its limit while its thread is still stuck
        with pytest.raises(TaskTimeout):
            h.result(timeout=30)
    s = eng.stats()
    assert s.failed_tasks == 3 and 0.0 <= s.error_rate <= 1.0
    gate.set()
    eng.submit(int).result(timeout=30)
    s = eng.stats()
    # the late returns are runs, not a second failure
    assert s.failed_tasks == 3 and s.succeeded_tasks == 1
    assert s.error_rate == pytest.approx(3 / 4)


def test_retried_task_counts_once(engine: Engine) -> None:
    @task(engine=engine, retries=2)
    def always() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        always.delay().result(timeout=30)
    engine.submit(int).result(timeout=30)
    s = engine.stats()
    assert (s.total_tasks_processed, s.failed_tasks, s.succeeded_tasks) == (4, 1, 1)
    assert s.error_rate == 0.5
