"""Auto-scaling between ``workers`` and ``max_workers``: grow while work waits behind
blocked workers, never past ``max_workers``, shrink back after idling."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from cytask import Engine


def test_grows_when_workers_are_blocked(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=1, max_workers=6)
    meet = threading.Barrier(6, timeout=60)
    # six tasks that can only finish if six run at the same time
    handles = [eng.submit(meet.wait) for _ in range(6)]
    assert sorted(h.result(timeout=90) for h in handles) == list(range(6))
    assert eng.stats().total_workers == 6  # visible in stats


def test_never_grows_past_max_workers(
    make_engine: Callable[..., Engine], gate: threading.Event, wait_until: Callable[..., None]
) -> None:
    eng = make_engine(workers=2, max_workers=5)
    lock = threading.Lock()
    running = 0
    peak = 0

    def blocked() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        gate.wait()
        with lock:
            running -= 1

    handles = [eng.submit(blocked) for _ in range(30)]
    wait_until(lambda: running == 5, what="five blocked workers")
    for _ in range(200):  # the supervisor keeps ticking: sample it many times
        s = eng.stats()
        assert s.total_workers <= 5
        assert s.total_queued == 25
    gate.set()
    for h in handles:
        h.result(timeout=60)
    assert peak == 5


def test_shrinks_back_after_idling(
    make_engine: Callable[..., Engine], wait_until: Callable[..., None]
) -> None:
    eng = make_engine(workers=2, max_workers=6, worker_idle_timeout=0.1)
    meet = threading.Barrier(6, timeout=60)
    for h in [eng.submit(meet.wait) for _ in range(6)]:
        h.result(timeout=90)
    wait_until(lambda: eng.stats().total_workers == 2, what="the pool to shrink to workers=2")
    # never below `workers`, and still serving
    assert [eng.submit(int, i).result(timeout=30) for i in range(10)] == list(range(10))
    assert eng.stats().total_workers == 2


def test_fixed_pool_does_not_grow(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=2)  # max_workers defaults to workers
    assert eng.max_workers == 2
    meet = threading.Barrier(3, timeout=0.5)
    handles = [eng.submit(meet.wait) for _ in range(3)]
    # only two can wait at the barrier together: it breaks instead of passing
    with pytest.raises(threading.BrokenBarrierError):
        handles[0].result(timeout=30)
    for h in handles:
        h.wait(30)
    assert eng.stats().total_workers == 2


def test_scaling_under_repeated_bursts(
    make_engine: Callable[..., Engine], wait_until: Callable[..., None]
) -> None:
    eng = make_engine(workers=1, max_workers=4, worker_idle_timeout=0.05)
    for _ in range(5):
        meet = threading.Barrier(4, timeout=60)
        for h in [eng.submit(meet.wait) for _ in range(4)]:
            h.result(timeout=90)
        assert eng.stats().total_workers <= 4
    wait_until(lambda: eng.stats().total_workers == 1, what="the pool to shrink to 1")
