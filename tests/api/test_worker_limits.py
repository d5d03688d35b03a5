"""Workers never deadlock on their own engine, and thread limits degrade, never kill.

A worker that must wait on its own engine (a full level, a child task) lends its slot
to a stand-in worker; polling does not start threads; time-limit replacements are
bounded; a thread that cannot be started leaves fewer workers (reported), never none.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import cytask
from cytask import Engine, QueueFull, TaskTimeout, _core, task


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _run(code: str, timeout: float = 60) -> str:
    """Run `code` in a fresh interpreter; a hang fails the test instead of the run."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"hung for {timeout} s (deadlock); output so far: {exc.stdout!r}")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


class _FailingThreads:
    """Stands in for the `_thread` module the core starts workers with: once `fail` is
    set, starting a thread raises like CPython at the system's thread limit."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.fail = False
        self.started = 0
        self.reports: list[Any] = []  # what reached sys.unraisablehook meanwhile

    def __getattr__(self, name: str) -> Any:  # get_ident() and the rest: the real ones
        return getattr(self._real, name)

    def spawn_error_reported(self) -> bool:
        return any("can't start new thread" in str(r.exc_value) for r in self.reports)

    def start_new_thread(self, fn: Callable[..., object], args: tuple[Any, ...]) -> int:
        if self.fail:
            raise RuntimeError("can't start new thread")
        self.started += 1
        return int(self._real.start_new_thread(fn, args))


@pytest.fixture
def thread_cap(monkeypatch: pytest.MonkeyPatch) -> Iterator[_FailingThreads]:
    fake = _FailingThreads(_core._thread)
    monkeypatch.setattr(_core, "_thread", fake)
    monkeypatch.setattr(sys, "unraisablehook", fake.reports.append)
    yield fake


# -- item 5: a worker waiting for space on its own engine -------------------------------


def test_retry_into_a_full_level_from_the_only_worker_does_not_deadlock() -> None:
    out = _run(
        """
        import threading
        import cytask

        eng = cytask.Engine(workers=1, queue_size=2)
        go = threading.Event()
        calls = []

        @cytask.task(engine=eng, retries=1)
        def flaky():
            calls.append(1)
            if len(calls) == 1:
                go.wait(30)
                raise ValueError("first attempt fails")
            return "retried"

        h = flaky.delay()
        while not calls:
            pass
        fill = [eng.submit(int, i) for i in range(2)]  # the level (2 slots) is full now
        go.set()  # the retry must queue behind them, from the only worker
        print(h.result(timeout=30), [f.result(timeout=30) for f in fill])
        eng.shutdown()
        """
    )
    assert out.split() == ["retried", "[0,", "1]"]


def test_parent_submitting_more_children_than_the_level_holds() -> None:
    out = _run(
        """
        import cytask

        eng = cytask.Engine(workers=1, queue_size=2)

        def parent():
            kids = [eng.submit(pow, i, 2) for i in range(20)]
            return sum(k.result(timeout=30) for k in kids)

        print(eng.submit(parent).result(timeout=30))
        eng.shutdown()
        """
    )
    assert out.strip() == str(sum(i * i for i in range(20)))


def test_full_level_without_a_stand_in_fails_the_submit_instead_of_hanging(
    make_engine: Callable[..., Engine], thread_cap: _FailingThreads
) -> None:
    eng = make_engine(workers=1, queue_size=2)
    thread_cap.fail = True

    def parent() -> int:
        for i in range(20):
            eng.submit(int, i)
        return 0

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        h = eng.submit(parent)
        with pytest.raises(QueueFull):
            h.result(timeout=30)
    assert any("stand-in" in str(w.message) for w in seen)
    assert eng.stats().worker_spawn_failures >= 1
    assert thread_cap.spawn_error_reported()
    assert eng.stats().total_workers == 1


def test_stand_in_for_a_full_level_leaves_afterwards(
    make_engine: Callable[..., Engine], wait_until: Callable[..., None]
) -> None:
    eng = make_engine(workers=1, queue_size=2, worker_idle_timeout=0.05)

    def parent() -> int:
        return sum(k.result(timeout=30) for k in [eng.submit(int, i) for i in range(10)])

    assert eng.submit(parent).result(timeout=30) == 45
    wait_until(lambda: eng.stats().total_workers == 1, what="the stand-in to retire")


def test_stand_in_stays_while_its_worker_waits_past_the_idle_timeout(
    make_engine: Callable[..., Engine],
) -> None:
    # the stand-in idles far longer than worker_idle_timeout before the child is due;
    # it must not retire while the only other worker still waits
    eng = make_engine(workers=1, worker_idle_timeout=0.02)

    def parent() -> str:
        child = eng.add_task(str.upper, "late", delay=0.5)
        return child.result(timeout=10)

    assert eng.submit(parent).result(timeout=30) == "LATE"


# -- item 20: polling does not start threads ------------------------------------------------


class _CountingEngine(Engine):
    spawned = 0

    def _spawn_worker(self) -> int:
        self.spawned += 1
        return int(super()._spawn_worker())


@pytest.mark.parametrize("poll_timeout", [0, 0.001])
def test_polling_wait_from_a_task_keeps_one_stand_in_at_most(
    poll_timeout: float, gate: threading.Event
) -> None:
    eng = _CountingEngine(workers=2)
    try:
        child = eng.submit(gate.wait)

        def parent() -> int:
            polls = 0
            while polls < 200:
                assert not child.wait(timeout=poll_timeout)
                polls += 1
            return polls

        h = eng.submit(parent)
        assert h.result(timeout=60) == 200
        assert eng.spawned - 2 <= (0 if poll_timeout == 0 else 1)
        assert eng.stats().total_workers <= 3
    finally:
        gate.set()
        eng.shutdown(wait=True, timeout=30)


# -- item 6: thread limits -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"workers": 1100}, {"workers": 1, "max_workers": 2000}, {"workers": 2**31}],
)
def test_more_workers_than_supported_is_rejected_up_front(kwargs: dict[str, int]) -> None:
    before = _threads()
    with pytest.raises(ValueError, match=f"<= {_core.LIMITS['workers']} "):
        Engine(**kwargs)
    assert _threads() <= before  # no thread started (others may have ended meanwhile)


def test_failed_start_stops_the_workers_it_started() -> None:
    # in a fresh interpreter: no other test's threads come and go while we count
    out = _run(
        """
        import os, time
        import cytask
        from cytask import _core

        real = _core._thread

        class Capped:  # the 6th thread fails, as at the system's thread limit
            started = 0

            def __getattr__(self, name):
                return getattr(real, name)

            def start_new_thread(self, fn, args):
                if self.started >= 5:
                    raise RuntimeError("can't start new thread")
                self.started += 1
                return real.start_new_thread(fn, args)

        before = len(os.listdir("/proc/self/task"))
        _core._thread = Capped()
        try:
            cytask.Engine(workers=8)
        except RuntimeError as exc:
            print(exc)
        deadline = time.monotonic() + 30
        while len(os.listdir("/proc/self/task")) != before and time.monotonic() < deadline:
            time.sleep(0.01)
        print("threads", len(os.listdir("/proc/self/task")) - before)
        """
    )
    assert "Engine(workers=8) could not start worker thread 6: can't start new thread" in out
    assert out.strip().endswith("threads 0")


def test_autoscaler_survives_the_thread_limit(
    make_engine: Callable[..., Engine],
    thread_cap: _FailingThreads,
    wait_until: Callable[..., None],
) -> None:
    eng = make_engine(workers=1, max_workers=4)
    meet = threading.Barrier(3, timeout=60)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        thread_cap.fail = True
        handles = [eng.submit(meet.wait) for _ in range(3)]
        wait_until(lambda: eng.stats().worker_spawn_failures >= 1, what="a failed growth attempt")
        assert eng.stats().total_workers == 1
        assert eng._supervisor is not None and eng._supervisor._thread.is_alive()
        assert thread_cap.spawn_error_reported()
        thread_cap.fail = False  # threads again: the supervisor grows the pool after all
        assert sorted(h.result(timeout=60) for h in handles) == [0, 1, 2]
    assert any("max_workers" in str(w.message) for w in seen)


def test_failed_replacement_after_a_time_limit_keeps_the_worker(
    make_engine: Callable[..., Engine], thread_cap: _FailingThreads, gate: threading.Event
) -> None:
    eng = make_engine(workers=1)

    @task(engine=eng, timeout=0.05)
    def stuck() -> None:
        gate.wait()

    thread_cap.fail = True
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with pytest.raises(TaskTimeout):
            stuck.delay().result(timeout=30)
        assert eng.stats().total_workers == 1  # not 0: the stuck worker stays in the pool
        assert eng.stats().worker_spawn_failures == 1
        assert thread_cap.spawn_error_reported()
        gate.set()
        # the stuck thread comes back as the engine's worker once its task returns
        assert eng.submit(int, 7).result(timeout=30) == 7


def test_time_limit_replacements_are_bounded(
    make_engine: Callable[..., Engine], gate: threading.Event, wait_until: Callable[..., None]
) -> None:
    bound = cytask._engine.MIN_STUCK_REPLACED
    eng = make_engine(workers=1)  # max_workers=1: the bound is MIN_STUCK_REPLACED

    @task(engine=eng, timeout=0.05)
    def stuck() -> None:
        gate.wait()

    before = _threads()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        handles = [stuck.delay() for _ in range(bound + 5)]
        for h in handles[: bound + 1]:
            with pytest.raises(TaskTimeout):
                h.result(timeout=30)
        wait_until(
            lambda: any("already stuck" in str(w.message) for w in seen),
            what="the bound to hold",
        )
        s = eng.stats()
        assert s.stuck_workers == bound
        assert s.total_workers == 1  # the last stuck worker is kept, not replaced
        assert _threads() <= before + bound
        assert not any(h.done() for h in handles[bound + 1 :])  # queued behind it
        gate.set()  # the kept worker comes back and runs them (the gate is open now)
        for h in handles[bound + 1 :]:
            assert h.result(timeout=30) is None
    assert eng.stats().worker_spawn_failures == 0  # the bound is no failure to start
    wait_until(lambda: eng.stats().stuck_workers == 0, what="stuck threads to exit")
