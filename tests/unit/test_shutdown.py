"""Shutdown: drain, cancel_pending, closed engines, terminal states for every task."""

from __future__ import annotations

import threading

import pytest

from cytask import CancelledError, Engine, EngineClosed, TaskStatus


def test_shutdown_wait_drains_every_queued_task() -> None:
    eng = Engine(workers=2)
    ran = []
    handles = [eng.submit(ran.append, i) for i in range(20_000)]
    eng.shutdown(wait=True)
    assert sorted(ran) == list(range(20_000))
    assert all(h.status is TaskStatus.SUCCEEDED for h in handles)
    assert eng.stats().total_workers == 0


def test_cancel_pending_accounts_for_every_task() -> None:
    eng = Engine(workers=1)
    gate = threading.Event()
    started = threading.Event()

    def hold() -> str:
        started.set()
        gate.wait()
        return "held"

    first = eng.submit(hold)
    assert started.wait(10)
    queued = [eng.submit(int, i) for i in range(1000)]
    eng.shutdown(wait=False, cancel_pending=True)  # the only worker is held: all queued cancel
    gate.set()
    eng.shutdown(wait=True)
    assert first.result(timeout=10) == "held"
    cancelled = [h for h in queued if h.status is TaskStatus.CANCELLED]
    assert len(cancelled) == 1000
    for h in cancelled:
        assert h.cancelled()
        with pytest.raises(CancelledError):
            h.result(timeout=0)
    stats = eng.stats()
    assert stats.cancelled_tasks == len(cancelled)
    assert stats.total_tasks_processed + stats.cancelled_tasks == 1001


def test_submit_after_shutdown_raises() -> None:
    eng = Engine(workers=1)
    eng.shutdown()
    with pytest.raises(EngineClosed, match="shut down"):
        eng.submit(print)
    with pytest.raises(EngineClosed):
        eng.add_task(print)
    eng.shutdown()  # twice is harmless


def test_context_manager_drains() -> None:
    with Engine(workers=2) as eng:
        handles = [eng.submit(pow, i, 2) for i in range(100)]
    assert [h.result(timeout=0) for h in handles] == [i * i for i in range(100)]
    assert eng.closed


def test_shutdown_timeout_cancels_what_did_not_run(hold) -> None:  # type: ignore[no-untyped-def]
    eng = Engine(workers=1)
    gate = hold(eng)
    queued = [eng.submit(int) for _ in range(10)]
    eng.shutdown(wait=True, timeout=0.05)
    assert all(h.status is TaskStatus.CANCELLED for h in queued)
    gate.set()


def test_shutdown_without_wait_still_runs_queue() -> None:
    eng = Engine(workers=1)
    handles = [eng.submit(int, i) for i in range(1000)]
    eng.shutdown(wait=False)
    assert [h.result(timeout=30) for h in handles] == list(range(1000))
