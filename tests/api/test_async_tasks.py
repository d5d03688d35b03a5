"""Async tasks: ``async def`` tasks run on the engine's own event loop thread, at most
``async_concurrency`` at once; handles can be awaited from any loop and waited on from
any thread."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable

import pytest

from cytask import Engine, TaskStatus, current_task, task


def test_async_task_returns_its_value_not_a_coroutine(engine: Engine) -> None:
    @task(engine=engine)
    async def add(x: int, y: int) -> int:
        await asyncio.sleep(0)
        return x + y

    h = add.delay(2, 3)
    assert h.result(timeout=30) == 5
    assert h.status is TaskStatus.SUCCEEDED


def test_async_tasks_share_one_engine_loop_thread(engine: Engine) -> None:
    async def where() -> tuple[int, int]:
        return threading.get_ident(), id(asyncio.get_running_loop())

    places = {engine.submit(where).result(timeout=30) for _ in range(20)}
    assert len(places) == 1
    ((ident, _),) = places
    assert ident != threading.get_ident()


def test_async_tasks_run_concurrently(make_engine: Callable[..., Engine]) -> None:
    barrier_type = getattr(asyncio, "Barrier", None)
    if barrier_type is None:
        pytest.skip("asyncio.Barrier needs Python 3.11")
    eng = make_engine(workers=1, async_concurrency=10)
    barrier = barrier_type(10)

    async def meet() -> int:
        # only passes if all ten are running on the loop at the same time
        return await asyncio.wait_for(barrier.wait(), 30)

    handles = [eng.submit(meet) for _ in range(10)]
    assert sorted(h.result(timeout=60) for h in handles) == list(range(10))


def test_async_concurrency_is_a_limit(
    make_engine: Callable[..., Engine], wait_until: Callable[..., None]
) -> None:
    eng = make_engine(workers=2, async_concurrency=3)
    lock = threading.Lock()
    running = 0
    peak = 0
    three_in = threading.Event()
    release = threading.Event()

    async def job() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            if running == 3:
                three_in.set()
        while not release.is_set():
            await asyncio.sleep(0.001)
        with lock:
            running -= 1

    handles = [eng.submit(job) for _ in range(12)]
    assert three_in.wait(30)
    # every coroutine has been handed to the loop (their handles say RUNNING) ...
    wait_until(lambda: all(h.status is TaskStatus.RUNNING for h in handles), what="hand-over")
    assert peak == 3  # ... and still no more than three run
    release.set()
    for h in handles:
        h.result(timeout=30)
    assert peak == 3
    assert eng.stats().async_tasks_running == 0


def test_handle_awaited_from_another_loop_and_threads(engine: Engine) -> None:
    gate = threading.Event()

    async def slow() -> str:
        while not gate.is_set():
            await asyncio.sleep(0.001)
        return "done"

    h = engine.submit(slow)
    results: list[object] = []

    def in_thread_loop() -> None:
        async def main() -> object:
            return await h

        results.append(asyncio.run(main()))

    def in_thread_blocking() -> None:
        results.append(h.result(timeout=30))

    threads = [threading.Thread(target=f) for f in (in_thread_loop, in_thread_blocking)]
    for t in threads:
        t.start()

    async def main() -> object:
        gate.set()
        return await h

    results.append(asyncio.run(main()))
    for t in threads:
        t.join(30)
    assert results == ["done"] * 3


def test_async_task_exception_and_retries(engine: Engine) -> None:
    @task(engine=engine, retries=2)
    async def flaky() -> int:
        attempt = current_task().attempt
        await asyncio.sleep(0)
        if attempt < 3:
            raise ConnectionError(f"attempt {attempt}")
        return attempt

    h = flaky.delay()
    assert h.result(timeout=30) == 3
    assert h.attempts == 3

    @task(engine=engine, retries=1)
    async def always() -> None:
        raise ValueError(f"attempt {current_task().attempt}")

    h = always.delay()
    with pytest.raises(ValueError, match="attempt 2"):
        h.result(timeout=30)
    assert h.status is TaskStatus.FAILED


def test_current_task_inside_async_task(engine: Engine) -> None:
    async def me() -> int:
        await asyncio.sleep(0)
        return current_task().task_id

    handles = [engine.submit(me) for _ in range(50)]
    assert [h.result(timeout=30) for h in handles] == [h.task_id for h in handles]


def test_async_task_without_time_limit_is_not_cancelled_by_cancel_request(
    engine: Engine,
) -> None:
    started = threading.Event()

    async def coop() -> str:
        started.set()
        while not current_task().cancel_requested:
            await asyncio.sleep(0.001)
        return "asked to stop"

    h = engine.submit(coop)
    assert started.wait(30)
    assert h.cancel() is False
    assert h.result(timeout=30) == "asked to stop"


def test_shutdown_waits_for_running_async_tasks(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=1)
    started = threading.Event()

    async def job() -> str:
        started.set()
        await asyncio.sleep(0.05)
        return "finished"

    h = eng.submit(job)
    assert started.wait(30)
    eng.shutdown(wait=True, timeout=30)
    assert h.result(timeout=0) == "finished"


def test_an_await_given_up_before_its_task_ends_reports_nothing(engine: Engine) -> None:
    """A request that awaited a handle and went away (its await cancelled), on a loop
    that closed before the task ended (asyncio.run's end, a TestClient's portal): the
    task's end must not report "Event loop is closed" as an unraisable error."""
    gate = threading.Event()
    h = engine.submit(gate.wait, 30)

    async def give_up() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(h, 0.01)

    asyncio.run(give_up())  # the loop the await's wake-up belongs to is closed now
    reported: list[object] = []
    after = threading.Event()
    h.add_done_callback(lambda _: after.set())  # done callbacks run in order: after wake
    previous = sys.unraisablehook
    sys.unraisablehook = reported.append
    try:
        gate.set()
        assert after.wait(30)
    finally:
        sys.unraisablehook = previous
    assert h.result(timeout=0) is True
    assert reported == []


def test_two_stops_of_the_event_loop_leave_no_task_behind() -> None:
    # shutdown() twice (a timed-out drain, then the fixture's; or two threads): the second
    # stop's task on the loop was still pending when the first stop closed the loop,
    # and Python reported "Task was destroyed but it is pending!" and a coroutine never
    # awaited.  Checked in a subprocess, where those reports reach stderr.
    import subprocess
    import textwrap

    code = textwrap.dedent(
        """
        import asyncio, gc, threading, time
        import cytask

        async def nap():
            await asyncio.sleep(0.3)

        for _ in range(3):
            eng = cytask.Engine(workers=1)
            h = eng.submit(nap)
            while eng._async is None or not eng._async.active:  # nap() runs on the loop
                time.sleep(0.001)
            runner = eng._async
            first = threading.Thread(target=runner.stop, args=(None,))
            first.start()
            runner.stop(None)  # while the first waits for nap()
            first.join()
            eng.shutdown()
            eng = runner = h = None
            gc.collect()
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0 and proc.stdout == "ok\n", proc.stdout + proc.stderr
    assert proc.stderr == ""
