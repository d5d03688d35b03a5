"""``Engine.as_executor()``: a real ``concurrent.futures.Executor``."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
from collections.abc import Callable

import pytest

from cytask import Engine, EngineExecutor


def test_is_an_executor_returning_real_futures(engine: Engine) -> None:
    ex = engine.as_executor()
    assert isinstance(ex, cf.Executor) and isinstance(ex, EngineExecutor)
    fut = ex.submit(pow, 2, 8)
    assert isinstance(fut, cf.Future)
    assert fut.result(timeout=30) == 256


def test_exceptions_and_kwargs(engine: Engine) -> None:
    ex = engine.as_executor()
    assert ex.submit(int, "ff", base=16).result(timeout=30) == 255
    fut = ex.submit(int, "zz")
    with pytest.raises(ValueError):
        fut.result(timeout=30)
    assert isinstance(fut.exception(timeout=0), ValueError)


def test_wait_and_as_completed(engine: Engine) -> None:
    ex = engine.as_executor()
    futures = [ex.submit(lambda i=i: i * i) for i in range(100)]
    done, not_done = cf.wait(futures, timeout=60)
    assert not not_done and len(done) == 100
    assert sorted(f.result() for f in cf.as_completed(futures, timeout=60)) == [
        i * i for i in range(100)
    ]


def test_map(engine: Engine) -> None:
    with engine.as_executor() as ex:
        assert list(ex.map(str, range(50), timeout=60)) == [str(i) for i in range(50)]
    assert not engine.closed  # the view shut down, not the engine
    assert engine.submit(int, 1).result(timeout=30) == 1


def test_run_in_executor(engine: Engine) -> None:
    ex = engine.as_executor()

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(ex, abs, -i) for i in range(30))))

    assert asyncio.run(main()) == list(range(30))


def test_cancelling_a_queued_future_cancels_the_task(
    make_engine: Callable[..., Engine], gate: threading.Event
) -> None:
    eng = make_engine(workers=1)
    ex = eng.as_executor()
    started = threading.Event()
    ex.submit(lambda: (started.set(), gate.wait()))
    assert started.wait(10)
    ran: list[int] = []
    fut = ex.submit(ran.append, 1)
    assert fut.cancel() is True
    assert fut.cancelled()
    gate.set()
    ex.submit(int).result(timeout=30)  # the worker went past it
    assert ran == []
    with pytest.raises(cf.CancelledError):
        fut.result(timeout=0)


def test_cancelling_a_running_future_is_refused(engine: Engine, gate: threading.Event) -> None:
    ex = engine.as_executor()
    started = threading.Event()
    fut = ex.submit(lambda: (started.set(), gate.wait(), "finished")[-1])
    assert started.wait(10)
    assert fut.running()
    assert fut.cancel() is False  # as with ThreadPoolExecutor: it runs to the end
    gate.set()
    assert fut.result(timeout=30) == "finished"


def test_shutdown_waits_and_refuses_new_work(engine: Engine) -> None:
    ex = engine.as_executor()
    done = threading.Event()
    fut = ex.submit(lambda: done.wait(30))
    t = threading.Timer(0.05, done.set)
    t.start()
    ex.shutdown(wait=True)
    assert fut.done() and fut.result() is True
    with pytest.raises(RuntimeError):  # EngineClosed is a RuntimeError, like the stdlib's
        ex.submit(int)
    t.join()


def test_shutdown_cancel_futures(make_engine: Callable[..., Engine], gate: threading.Event) -> None:
    eng = make_engine(workers=1)
    ex = eng.as_executor()
    started = threading.Event()
    first = ex.submit(lambda: (started.set(), gate.wait()))
    assert started.wait(10)
    ran: list[int] = []
    pending = [ex.submit(ran.append, i) for i in range(5)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in pending)
    gate.set()
    first.result(timeout=30)
    eng.submit(int).result(timeout=30)
    assert ran == []


@pytest.mark.timeout(30)
def test_executor_on_a_closed_engine(make_engine: Callable[..., Engine]) -> None:
    from cytask import EngineClosed

    eng = make_engine(workers=1)
    ex = eng.as_executor()
    eng.shutdown()
    with pytest.raises(EngineClosed):
        ex.submit(int)
    ex.shutdown(wait=True)  # returns: the rejected submit left nothing to wait for


def test_cancel_races_the_start(engine: Engine) -> None:
    ex = engine.as_executor()
    for _ in range(1000):
        ran = threading.Event()
        fut = ex.submit(ran.set)
        cancelled = fut.cancel()
        done, _ = cf.wait([fut], timeout=30)  # a cancelled Future must wake cf.wait too
        assert done == {fut}
        if cancelled:
            assert fut.cancelled() and not ran.is_set()
        else:
            assert fut.result(timeout=0) is None and ran.is_set()


def test_engine_shutdown_cancels_the_futures(
    make_engine: Callable[..., Engine], gate: threading.Event
) -> None:
    eng = make_engine(workers=1)
    ex = eng.as_executor()
    started = threading.Event()
    first = ex.submit(lambda: (started.set(), gate.wait())[-1])
    assert started.wait(10)
    queued = [ex.submit(int, i) for i in range(5)]
    eng.shutdown(wait=False, cancel_pending=True)
    _, not_done = cf.wait(queued, timeout=30)
    assert not not_done and all(f.cancelled() for f in queued)
    gate.set()
    assert first.result(timeout=30) is True
