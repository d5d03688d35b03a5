"""Cancellation: a queued or scheduled task cancelled returns True and never runs; a
running task gets a cooperative request and ``cancel()`` returns False."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from cytask import CancelledError, Engine, TaskStatus, current_task, task


def test_cancel_queued_task(make_engine: Callable[..., Engine], gate: threading.Event) -> None:
    eng = make_engine(workers=1)
    ran: list[int] = []
    started = threading.Event()
    blocker = eng.submit(lambda: (started.set(), gate.wait()))
    assert started.wait(10)
    victim = eng.submit(ran.append, 1)
    after = eng.submit(ran.append, 2)
    assert victim.status is TaskStatus.PENDING
    assert victim.cancel() is True
    assert victim.cancelled() and victim.done()
    assert victim.status is TaskStatus.CANCELLED
    with pytest.raises(CancelledError):
        victim.result(timeout=0)
    with pytest.raises(CancelledError):
        victim.exception(timeout=0)
    gate.set()
    blocker.result(timeout=10)
    after.result(timeout=10)  # the worker went past the cancelled task
    assert ran == [2]
    assert victim.cancel() is True  # cancelling again: still cancelled


def test_cancelled_error_is_the_concurrent_futures_one() -> None:
    import concurrent.futures

    assert CancelledError is concurrent.futures.CancelledError


def test_cancel_scheduled_task(engine: Engine) -> None:
    ran: list[str] = []
    victim = engine.add_task(ran.append, "victim", delay=0.05)
    assert victim.status is TaskStatus.SCHEDULED
    assert victim.cancel() is True
    # a later delayed task proves the timer went past the victim's deadline
    engine.add_task(ran.append, "later", delay=0.15).result(timeout=30)
    assert ran == ["later"]
    assert victim.cancelled()


def test_cancel_running_task_is_cooperative(engine: Engine) -> None:
    started = threading.Event()
    saw_request = threading.Event()

    @task(engine=engine)
    def long_job() -> str:
        started.set()
        while not current_task().cancel_requested:
            time.sleep(0.001)
        saw_request.set()
        return "stopped early"

    h = long_job.delay()
    assert started.wait(10)
    assert not h.cancel_requested
    assert h.cancel() is False  # it is running: only a request
    assert h.cancel_requested
    assert saw_request.wait(10)
    assert h.result(timeout=10) == "stopped early"
    assert not h.cancelled()


def test_cancel_finished_task_changes_nothing(engine: Engine) -> None:
    h = engine.submit(lambda: 42)
    assert h.result(timeout=10) == 42
    assert h.cancel() is False
    assert h.status is TaskStatus.SUCCEEDED and not h.cancelled()
    assert h.result(timeout=0) == 42


def test_cancel_runs_done_callbacks_and_wakes_waiters(
    make_engine: Callable[..., Engine], gate: threading.Event
) -> None:
    eng = make_engine(workers=1)
    started = threading.Event()
    eng.submit(lambda: (started.set(), gate.wait()))
    assert started.wait(10)
    victim = eng.submit(int)
    called: list[TaskStatus] = []
    victim.add_done_callback(lambda h: called.append(h.status))
    waiter_saw: list[BaseException] = []
    waiting = threading.Event()

    def wait_on_victim() -> None:
        waiting.set()
        try:
            victim.result(timeout=30)
        except BaseException as exc:
            waiter_saw.append(exc)

    t = threading.Thread(target=wait_on_victim)
    t.start()
    assert waiting.wait(10)
    victim.cancel()
    t.join(30)
    assert not t.is_alive()
    assert called == [TaskStatus.CANCELLED]
    assert len(waiter_saw) == 1 and isinstance(waiter_saw[0], CancelledError)


def test_cancel_races_the_worker(engine: Engine) -> None:
    # Whoever wins, the outcome is consistent: True means it never ran, False means it ran.
    for _ in range(2000):
        ran = threading.Event()
        h = engine.submit(ran.set)
        won = h.cancel()
        h.wait(timeout=30)
        assert h.done()
        if won:
            assert h.cancelled() and not ran.is_set()
        else:
            assert ran.is_set() and h.status is TaskStatus.SUCCEEDED


def test_cancelled_tasks_are_counted(
    make_engine: Callable[..., Engine], gate: threading.Event
) -> None:
    eng = make_engine(workers=1)
    started = threading.Event()
    eng.submit(lambda: (started.set(), gate.wait()))
    assert started.wait(10)
    handles = [eng.submit(int) for _ in range(7)]
    assert all(h.cancel() for h in handles)
    delayed = eng.add_task(int, delay=60)
    assert delayed.cancel()
    assert eng.stats().cancelled_tasks == 8


def test_shutdown_cancel_pending(make_engine: Callable[..., Engine], gate: threading.Event) -> None:
    eng = make_engine(workers=1)
    started = threading.Event()
    running = eng.submit(lambda: (started.set(), gate.wait()))
    assert started.wait(10)
    queued = [eng.submit(int, i) for i in range(10)]
    eng.shutdown(wait=False, cancel_pending=True)  # the worker is still busy
    assert all(h.cancelled() for h in queued)
    gate.set()
    eng.shutdown(wait=True, timeout=30)
    assert running.status is TaskStatus.SUCCEEDED
