"""The timer, async tasks and schedules under pressure: full queues, odd durations,
shutdown from odd places, and what finished work leaves behind (issue 7)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from cytask import (
    Engine,
    Priority,
    QueueFull,
    TaskStatus,
    TaskTimeout,
    current_task,
    task,
)


def _fill(eng: Engine, priority: Priority = Priority.NORMAL) -> list[Any]:
    """Queue no-op tasks until `priority`'s level is full (the workers must be held)."""
    return [eng.add_task(int, priority=priority) for _ in range(eng.queue_capacity)]


def _run_child(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter; a hang fails the test instead of the suite."""
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the child hung: {exc.stdout!r} {exc.stderr!r}")


# -- item 4: a full queue never blocks the timer ----------------------------------------


def test_full_queue_does_not_stop_time_limits_or_delays(
    make_engine: Callable[..., Engine], hold: Callable[..., threading.Event]
) -> None:
    eng = make_engine(workers=2, queue_size=2, submit_timeout=None)
    stuck_gate = threading.Event()
    stuck_started = threading.Event()

    @task(engine=eng, timeout=0.5)
    def stuck() -> str:
        stuck_started.set()
        stuck_gate.wait(60)
        return "late"

    limited = stuck.delay()
    assert stuck_started.wait(30)
    gate = hold(eng, 1)  # the other worker
    queued = _fill(eng)
    # due while NORMAL is full: the old timer blocked here, holding every deadline
    due_normal = eng.add_task(lambda: "normal", delay=0.01)
    due_high = eng.add_task(lambda: "high", delay=0.05, priority=Priority.HIGH)
    try:
        t0 = time.monotonic()
        while due_normal.status is TaskStatus.SCHEDULED and time.monotonic() - t0 < 10:
            time.sleep(0.005)
        if not limited.done():  # nothing has freed a slot yet
            assert due_normal.status is TaskStatus.PENDING  # due, waiting for space
        with pytest.raises(TaskTimeout):
            limited.result(timeout=10)  # the time limit still fired
        # the replacement worker for the stuck slot runs the HIGH task the timer queued
        assert due_high.result(timeout=10) == "high"
    finally:
        gate.set()
        stuck_gate.set()
    assert due_normal.result(timeout=10) == "normal"
    assert all(h.result(timeout=10) == 0 for h in queued)


def test_due_task_fails_with_queue_full_after_submit_timeout(
    make_engine: Callable[..., Engine], hold: Callable[..., threading.Event]
) -> None:
    eng = make_engine(workers=1, queue_size=2, submit_timeout=0.2)
    gate = hold(eng, 1)
    queued = _fill(eng)
    h = eng.add_task(int, delay=0.01)
    with pytest.raises(QueueFull):
        h.result(timeout=10)
    later = eng.add_task(int, delay=0.01, priority=Priority.HIGH)
    # the timer went on: the HIGH task became due and was queued
    t0 = time.monotonic()
    while later.status is TaskStatus.SCHEDULED and time.monotonic() - t0 < 10:
        time.sleep(0.005)
    assert later.status is TaskStatus.PENDING
    gate.set()
    assert later.result(timeout=10) == 0
    assert all(q.result(timeout=10) == 0 for q in queued)


def test_shutdown_cancels_due_tasks_waiting_for_space(
    make_engine: Callable[..., Engine], hold: Callable[..., threading.Event]
) -> None:
    eng = make_engine(workers=1, queue_size=2, submit_timeout=None)
    gate = hold(eng, 1)
    _fill(eng)
    handles = [eng.add_task(int, delay=0.01) for _ in range(3)]
    t0 = time.monotonic()
    while any(h.status is TaskStatus.SCHEDULED for h in handles) and time.monotonic() - t0 < 10:
        time.sleep(0.005)
    threading.Timer(0.2, gate.set).start()
    eng.shutdown(wait=True, cancel_pending=True, timeout=30)
    for h in handles:
        assert h.wait(timeout=10)
        assert h.status is TaskStatus.CANCELLED


# -- item 13: a retry waiting out its back-off is not hit by an old time limit -------------


def test_time_limit_of_a_finished_attempt_does_not_flag_the_retry(engine: Engine) -> None:
    seen: list[tuple[int, bool]] = []

    @task(engine=engine, timeout=0.2, retries=3, retry_backoff=0.3, retry_jitter=False)
    def flaky() -> None:
        me = current_task()
        seen.append((me.attempt, me.cancel_requested))
        raise ConnectionError(f"attempt {me.attempt}")

    h = flaky.delay()
    with pytest.raises(ConnectionError, match="attempt 4"):
        h.result(timeout=30)
    assert seen == [(1, False), (2, False), (3, False), (4, False)]
    assert h.attempts == 4


# -- item 14: an async task's own TimeoutError is its own ----------------------------------


def test_async_tasks_own_timeout_error_is_not_a_task_timeout(engine: Engine) -> None:
    @task(engine=engine, timeout=30, retries=2, retry_on=(TimeoutError,))
    async def times_out_itself() -> None:
        await asyncio.sleep(0)
        raise TimeoutError(f"upstream, attempt {current_task().attempt}")

    h = times_out_itself.delay()
    with pytest.raises(TimeoutError, match="upstream, attempt 3") as info:
        h.result(timeout=30)
    assert not isinstance(info.value, TaskTimeout)
    assert h.attempts == 3


def test_async_time_limit_is_still_a_final_task_timeout(engine: Engine) -> None:
    @task(engine=engine, timeout=0.1, retries=2, retry_on=(TimeoutError,))
    async def slow() -> None:
        await asyncio.sleep(60)

    h = slow.delay()
    with pytest.raises(TaskTimeout):
        h.result(timeout=30)
    assert h.attempts == 1  # time limits are final, as for sync tasks


# -- item 8: async tasks and shutdown ----------------------------------------------------


def test_shutdown_timeout_ends_a_long_async_task(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=1)
    started = threading.Event()

    async def long() -> None:
        started.set()
        await asyncio.sleep(30)

    h = eng.submit(long)
    assert started.wait(30)
    t0 = time.monotonic()
    eng.shutdown(wait=True, timeout=0.3)
    assert time.monotonic() - t0 < 10
    assert h.wait(timeout=10), "the handle stayed running after shutdown"
    assert h.status is TaskStatus.CANCELLED


def test_shutdown_timeout_ends_an_async_task_that_ignores_cancellation(
    make_engine: Callable[..., Engine],
) -> None:
    eng = make_engine(workers=1)
    started = threading.Event()
    stop = threading.Event()

    async def stubborn() -> None:
        started.set()
        while not stop.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)

    h = eng.submit(stubborn)
    assert started.wait(30)
    try:
        eng.shutdown(wait=True, timeout=0.2)
        assert h.wait(timeout=10)
        assert h.status is TaskStatus.CANCELLED
    finally:
        stop.set()


def test_shutdown_timeout_ends_an_async_task_that_blocks_the_loop(
    make_engine: Callable[..., Engine],
) -> None:
    eng = make_engine(workers=1)
    started = threading.Event()
    release = threading.Event()

    async def blocker() -> None:
        started.set()
        release.wait(30)  # never awaits: the loop itself is stuck

    h = eng.submit(blocker)
    assert started.wait(30)
    try:
        t0 = time.monotonic()
        eng.shutdown(wait=True, timeout=0.2)
        assert time.monotonic() - t0 < 10
        assert h.status is TaskStatus.CANCELLED
    finally:
        release.set()


@pytest.mark.parametrize("timeout", [None, 2.0])
def test_shutdown_called_inside_an_async_task(timeout: float | None) -> None:
    proc = _run_child(
        f"""
        import asyncio
        import cytask

        eng = cytask.Engine(workers=1)

        async def other():
            await asyncio.sleep(0.05)
            return "other"

        async def closer():
            eng.shutdown(wait=True, timeout={timeout!r})
            return "closed"

        o = eng.submit(other)
        h = eng.submit(closer)
        print(h.result(timeout=20), o.result(timeout=20), flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["closed", "other"]


@pytest.mark.parametrize("exc", ["SystemExit", "KeyboardInterrupt"])
def test_base_exception_in_a_timed_async_task_keeps_the_loop(engine: Engine, exc: str) -> None:
    @task(engine=engine, timeout=30)
    async def bail() -> None:
        await asyncio.sleep(0)
        raise {"SystemExit": SystemExit, "KeyboardInterrupt": KeyboardInterrupt}[exc]()

    async def after() -> str:
        await asyncio.sleep(0)
        return "loop alive"

    h = bail.delay()
    assert h.wait(timeout=30)
    assert type(h.exception(timeout=0)).__name__ == exc
    assert engine.submit(after).result(timeout=10) == "loop alive"


# -- item 9: durations --------------------------------------------------------------------


def test_huge_delay_does_not_kill_the_timer(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=1, result_ttl=None)
    far = eng.add_task(print, delay=1e10)
    assert far.status is TaskStatus.SCHEDULED
    time.sleep(0.05)  # the timer now waits for the far deadline (it overflowed here)
    assert eng.add_task(lambda: "soon", delay=0.01).result(timeout=10) == "soon"
    assert eng._timer is not None and eng._timer._thread.is_alive()
    eng.shutdown(wait=True, timeout=1e10)  # raised OverflowError after closing
    assert far.status is TaskStatus.CANCELLED


@pytest.mark.parametrize(
    "call",
    [
        lambda eng: eng.add_task(print, delay=float("inf")),
        lambda eng: eng.every(float("inf"), print),
        lambda eng: task(engine=eng, timeout=float("inf"))(print),
        lambda eng: task(engine=eng, retry_backoff=float("inf"))(print),
        lambda eng: task(engine=eng, retry_backoff_max=float("inf"))(print),
        lambda eng: task(engine=eng)(print).apply_async(countdown=float("inf")),
        lambda eng: Engine(workers=1, result_ttl=float("inf")),
    ],
    ids=["delay", "interval", "timeout", "retry_backoff", "retry_backoff_max", "countdown", "ttl"],
)
def test_infinite_schedule_durations_are_refused_by_name(
    engine: Engine, call: Callable[[Engine], object]
) -> None:
    with pytest.raises(ValueError, match=r"Expected a finite number of seconds for \w+"):
        call(engine)


def test_huge_waits_mean_no_limit(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(
        workers=1, submit_timeout=1e10, worker_idle_timeout=float("inf"), result_ttl=1e10
    )
    h = eng.submit(lambda: "ok")
    assert h.result(timeout=1e10) == "ok"
    assert h.result(timeout=float("inf")) == "ok"
    assert eng.submit(time.sleep, 0.05).wait(timeout=1e300) is True
    assert eng._sweep_results(1e10) == 0 and eng.get(h.task_id) is h
    eng.shutdown(wait=True, timeout=float("inf"))


def test_many_retries_do_not_overflow_the_backoff() -> None:
    from cytask._engine import _backoff

    options = task(retries=5000, retry_backoff=0.5, retry_backoff_max=60)(print).options
    assert _backoff(options, 2000) <= 60


# -- item 16: a periodic schedule survives QueueFull ---------------------------------------


def test_periodic_survives_queue_full_and_says_so(
    make_engine: Callable[..., Engine],
    hold: Callable[..., threading.Event],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reported: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    eng = make_engine(workers=1, queue_size=2, submit_timeout=0)
    gate = hold(eng, 1)
    queued = _fill(eng)
    ran = threading.Event()
    p = eng.every(0.02, ran.set)
    t0 = time.monotonic()
    while p.dropped < 3 and time.monotonic() - t0 < 10:
        time.sleep(0.005)
    assert p.dropped >= 3
    assert isinstance(p.last_error, QueueFull)
    assert len(reported) == 1 and isinstance(reported[0].exc_value, QueueFull)  # once a streak
    gate.set()
    for h in queued:
        h.result(timeout=10)
    assert ran.wait(10), "the schedule stopped after QueueFull"
    p.cancel()
    assert p.stopped_by is None


# -- item 21: resources ---------------------------------------------------------------------


def test_cancelled_periodics_leave_the_engine_and_timer(engine: Engine) -> None:
    refs = []
    for _ in range(300):
        p = engine.every(3600, print)
        refs.append(weakref.ref(p))
        p.cancel()
    del p
    gc.collect()
    assert all(r() is None for r in refs), "a cancelled Periodic was kept alive"
    assert engine._timer is not None
    assert len(engine._timer._heap) < 150  # tombstones were compacted away


def test_finished_time_limits_leave_the_timer(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=2, max_results=0)

    @task(engine=eng, timeout=3600)
    def quick(i: int) -> int:
        return i

    handles = [quick.delay(i) for i in range(2000)]
    assert sum(h.result(timeout=30) for h in handles) == sum(range(2000))
    assert eng._timer is not None
    assert len(eng._timer) <= 2  # live entries: at most the result sweep
    assert len(eng._timer._heap) < 200  # and the heap was compacted, not left at 2000


def test_stats_counts_scheduled_without_walking_the_timer(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    handles = [engine.add_task(int, delay=3600) for _ in range(1000)]
    assert engine._timer is not None
    monkeypatch.setattr(
        engine._timer, "pending", lambda: pytest.fail("stats() walked the timer's heap")
    )
    assert engine.stats().scheduled_tasks == 1000
    for h in handles[::2]:
        h.cancel()
    assert engine.stats().scheduled_tasks == 500


def test_shutdown_without_wait_stops_the_timer_and_loop_threads(
    make_engine: Callable[..., Engine],
) -> None:
    eng = make_engine(workers=1, name="nowait-engine")

    async def hello() -> str:
        return "hi"

    assert eng.submit(hello).result(timeout=10) == "hi"
    eng.add_task(int, delay=3600)
    prefix = "nowait-engine-"
    assert {t.name for t in threading.enumerate() if t.name.startswith(prefix)} >= {
        "nowait-engine-timer",
        "nowait-engine-asyncio",
    }
    eng.shutdown(wait=False)
    t0 = time.monotonic()
    while any(t.name.startswith(prefix) for t in threading.enumerate()):
        assert time.monotonic() - t0 < 10, [t.name for t in threading.enumerate()]
        time.sleep(0.01)


def test_result_ttl_zero_does_not_spin_the_timer(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=1, result_ttl=0.0)
    calls: list[float] = []
    real = eng._sweep_results

    def counting(ttl: float) -> int:
        calls.append(ttl)
        return int(real(ttl))

    eng._sweep_results = counting  # type: ignore[method-assign]
    time.sleep(0.5)
    assert len(calls) <= 1, f"{len(calls)} sweeps in 0.5 s of idling"


def test_task_returning_its_own_handle_is_collected(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=1, max_results=0)

    def me() -> object:
        return current_task()

    h = eng.submit(me)
    assert h.result(timeout=10) is h
    ref = weakref.ref(h)
    del h
    gc.collect()
    assert ref() is None, "a handle holding itself as its result leaked"


def test_slow_periodic_runs_do_not_pile_up(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=4)
    lock = threading.Lock()
    in_flight = 0
    peak = 0
    release = threading.Event()

    def slow() -> None:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        release.wait(30)
        with lock:
            in_flight -= 1

    p = eng.every(0.01, slow)
    t0 = time.monotonic()
    while p.skipped < 5 and time.monotonic() - t0 < 10:
        time.sleep(0.005)
    assert p.skipped >= 5  # firings while the run was still going were skipped ...
    assert p.runs == 1 and peak == 1  # ... not queued behind it
    release.set()
    p.cancel()


def test_due_task_fails_if_no_hand_off_thread_can_start(
    make_engine: Callable[..., Engine],
    hold: Callable[..., threading.Event],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reported: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    eng = make_engine(workers=1, queue_size=2, submit_timeout=None)
    gate = hold(eng, 1)
    queued = _fill(eng)

    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    h = eng.add_task(int, delay=0.01)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        h.result(timeout=10)  # ended, not left pending forever
    monkeypatch.undo()
    gate.set()
    assert all(q.result(timeout=10) == 0 for q in queued)


def test_time_limits_still_fire_while_shutdown_drains(
    make_engine: Callable[..., Engine], hold: Callable[..., threading.Event]
) -> None:
    eng = make_engine(workers=1)
    stuck_gate = threading.Event()

    @task(engine=eng, timeout=0.2)
    def stuck() -> None:
        stuck_gate.wait(60)

    gate = hold(eng, 1)
    h = stuck.delay()  # queued behind the held worker
    closer = threading.Thread(target=eng.shutdown, kwargs={"wait": True, "timeout": 60})
    closer.start()
    try:
        t0 = time.monotonic()
        while not eng.closed and time.monotonic() - t0 < 10:
            time.sleep(0.005)
        gate.set()  # the drain starts `stuck` after shutdown began
        with pytest.raises(TaskTimeout):
            h.result(timeout=10)
    finally:
        stuck_gate.set()
        closer.join(60)


def test_periodic_run_due_on_a_full_queue_waits_then_runs(
    make_engine: Callable[..., Engine], hold: Callable[..., threading.Event]
) -> None:
    eng = make_engine(workers=1, queue_size=2, submit_timeout=None)
    gate = hold(eng, 1)
    queued = _fill(eng)
    ran = threading.Event()
    p = eng.every(0.01, ran.set)
    t0 = time.monotonic()
    while p.skipped < 3 and time.monotonic() - t0 < 10:
        time.sleep(0.005)
    # the first run waits for space (the timer went on: later firings were skipped)
    assert p.runs == 1 and p.skipped >= 3 and p.dropped == 0
    assert p.last_handle is not None and p.last_handle.status is TaskStatus.PENDING
    gate.set()
    assert ran.wait(10)
    p.cancel()
    assert all(q.result(timeout=10) == 0 for q in queued)
