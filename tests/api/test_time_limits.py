"""Time limits: the handle fails with ``TaskTimeout`` at the deadline, the task sees
``cancel_requested``, its late result is discarded, and the stuck worker's slot is
replaced so capacity is not lost.  Async tasks are really cancelled."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from cytask import CytaskError, Engine, TaskStatus, TaskTimeout, current_task, task

LATE = 0.5


def test_handle_fails_with_task_timeout_at_the_deadline(
    engine: Engine, gate: threading.Event
) -> None:
    started = threading.Event()
    t_start: list[float] = []

    @task(engine=engine, timeout=0.2)
    def stuck() -> str:
        t_start.append(time.monotonic())
        started.set()
        gate.wait()
        return "late"

    submitted = time.monotonic()
    h = stuck.delay()
    assert started.wait(10)
    with pytest.raises(TaskTimeout, match=r"time limit of 0\.2 s") as info:
        h.result(timeout=30)
    failed_at = time.monotonic()
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, CytaskError)
    assert submitted + 0.2 <= failed_at <= t_start[0] + 0.2 + LATE
    assert h.status is TaskStatus.FAILED
    gate.set()  # the late result arrives ... and is discarded
    engine.submit(int).result(timeout=10)
    with pytest.raises(TaskTimeout):
        h.result(timeout=0)
    assert isinstance(h.exception(timeout=0), TaskTimeout)


def test_late_result_is_discarded_after_it_returns(engine: Engine) -> None:
    returned = threading.Event()

    @task(engine=engine, timeout=0.1)
    def cooperative() -> str:
        try:
            while not current_task().cancel_requested:
                time.sleep(0.001)
            return "too late"
        finally:
            returned.set()

    h = cooperative.delay()
    with pytest.raises(TaskTimeout):
        h.result(timeout=30)
    assert returned.wait(10)
    engine.submit(int).result(timeout=10)  # and the worker finished its bookkeeping
    assert h.status is TaskStatus.FAILED
    assert isinstance(h.exception(timeout=0), TaskTimeout)


def test_cancel_requested_turns_true_at_the_deadline(engine: Engine) -> None:
    seen: list[tuple[bool, float]] = []
    finished = threading.Event()

    @task(engine=engine, timeout=0.2)
    def polls() -> None:
        seen.append((current_task().cancel_requested, time.monotonic()))
        while not current_task().cancel_requested:
            time.sleep(0.001)
        seen.append((True, time.monotonic()))
        finished.set()

    submitted = time.monotonic()
    h = polls.delay()
    with pytest.raises(TaskTimeout):
        h.result(timeout=30)
    assert finished.wait(10)
    (before, t0), (_, t1) = seen
    assert before is False
    # the limit counts from the start of the attempt: after submit, before the body ran
    assert submitted + 0.2 <= t1 <= t0 + 0.2 + LATE


def test_stuck_worker_slot_is_replaced(
    make_engine: Callable[..., Engine], gate: threading.Event, wait_until: Callable[..., None]
) -> None:
    eng = make_engine(workers=1)
    started = threading.Event()

    @task(engine=eng, timeout=0.1)
    def stuck() -> None:
        started.set()
        gate.wait()

    h = stuck.delay()
    assert started.wait(10)
    queued = eng.submit(lambda: "capacity kept")  # would wait for `gate` forever otherwise
    with pytest.raises(TaskTimeout):
        h.result(timeout=30)
    assert queued.result(timeout=30) == "capacity kept"
    assert not gate.is_set()  # the stuck task is still stuck
    gate.set()
    # once the stuck thread is free the pool shrinks back to its size
    wait_until(lambda: eng.stats().total_workers == 1, what="the pool to shrink back")
    assert eng.submit(lambda: 1).result(timeout=10) == 1


def test_replacement_survives_idle_retirement(
    make_engine: Callable[..., Engine], gate: threading.Event
) -> None:
    eng = make_engine(workers=1, worker_idle_timeout=0.05)

    @task(engine=eng, timeout=0.05)
    def stuck() -> None:
        gate.wait()

    with pytest.raises(TaskTimeout):
        stuck.delay().result(timeout=30)
    time.sleep(0.5)  # well past worker_idle_timeout: an idle replacement may retire now
    h = eng.submit(lambda: "capacity kept")
    ok = h.wait(timeout=5)
    gate.set()
    assert ok


def test_many_stuck_tasks_do_not_starve_the_engine(
    make_engine: Callable[..., Engine], gate: threading.Event
) -> None:
    eng = make_engine(workers=2)

    @task(engine=eng, timeout=0.05)
    def stuck() -> None:
        gate.wait()

    stuck_handles = [stuck.delay() for _ in range(6)]
    for h in stuck_handles:
        with pytest.raises(TaskTimeout):
            h.result(timeout=30)
    assert [eng.submit(int, i).result(timeout=30) for i in range(20)] == list(range(20))


def test_fast_tasks_with_a_limit_are_not_timed_out(engine: Engine) -> None:
    @task(engine=engine, timeout=30)
    def quick(i: int) -> int:
        return i * 2

    handles = [quick.delay(i) for i in range(500)]
    assert [h.result(timeout=30) for h in handles] == [i * 2 for i in range(500)]
    assert engine.stats().failed_tasks == 0


def test_timeout_is_per_attempt_and_not_carried_into_a_retry(engine: Engine) -> None:
    @task(engine=engine, timeout=0.3, retries=2)
    def first_fails_fast() -> int:
        attempt = current_task().attempt
        if attempt == 1:
            raise ConnectionError("quick failure")
        time.sleep(0.1)  # well under the limit of this attempt
        return attempt

    assert first_fails_fast.delay().result(timeout=30) == 2


def test_result_timeout_is_not_task_timeout(engine: Engine, gate: threading.Event) -> None:
    h = engine.submit(gate.wait)
    with pytest.raises(TimeoutError) as info:
        h.result(timeout=0.01)
    assert not isinstance(info.value, TaskTimeout)  # waiting ran out; the task did not fail
    gate.set()
    assert h.result(timeout=10) is True


def test_async_task_is_really_cancelled_at_its_limit(engine: Engine) -> None:
    cancelled = threading.Event()

    @task(engine=engine, timeout=0.1)
    async def sleeper() -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    t0 = time.monotonic()
    h = sleeper.delay()
    with pytest.raises(TaskTimeout):
        h.result(timeout=30)
    assert time.monotonic() - t0 <= 0.1 + LATE * 2
    assert cancelled.wait(10)
    assert h.status is TaskStatus.FAILED


def test_shutdown_does_not_wait_for_an_abandoned_task(
    make_engine: Callable[..., Engine], gate: threading.Event
) -> None:
    eng = make_engine(workers=1)

    @task(engine=eng, timeout=0.05)
    def stuck() -> None:
        gate.wait()

    h = stuck.delay()
    with pytest.raises(TaskTimeout):
        h.result(timeout=30)
    t0 = time.monotonic()
    eng.shutdown(wait=True, timeout=60)
    assert time.monotonic() - t0 < 30
    assert not gate.is_set()


def test_finished_task_is_not_kept_alive_by_its_pending_time_limit(
    make_engine: Callable[..., Engine],
) -> None:
    import gc
    import weakref

    class Result:
        pass

    eng = make_engine(workers=1, max_results=0)

    @task(engine=eng, timeout=3600)
    def make() -> Result:
        return Result()

    h = make.delay()
    ref = weakref.ref(h.result(timeout=10))
    del h
    gc.collect()
    assert ref() is None, "the timer's entry for the time limit must not hold the handle"
