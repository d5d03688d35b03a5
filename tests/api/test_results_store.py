"""The result store: bounded by ``max_results`` and ``result_ttl`` so memory does not
grow with the number of tasks, while a handle the user holds keeps its own result."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable

from cytask import Engine, TaskHandle


def _live_handles() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is TaskHandle)


def test_get_finds_recent_tasks(engine: Engine) -> None:
    handles = [engine.submit(str, i) for i in range(50)]
    for h in handles:
        h.result(timeout=30)
        assert engine.get(h.task_id) is h
    assert engine.get(0) is None
    assert engine.get(-1) is None
    assert engine.get(handles[-1].task_id + 1000) is None


def test_max_results_evicts_the_oldest(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=1, max_results=10)
    handles = [eng.submit(str, i) for i in range(35)]
    for h in handles:
        h.result(timeout=30)
    found = [h for h in handles if eng.get(h.task_id) is h]
    assert found == handles[-10:]
    # a handle the user holds keeps its result after it left the store
    assert [h.result(timeout=0) for h in handles] == [str(i) for i in range(35)]


def test_max_results_zero_keeps_nothing(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=1, max_results=0)
    h = eng.submit(lambda: "mine")
    assert h.result(timeout=30) == "mine"
    assert eng.get(h.task_id) is None


def test_result_ttl_expires_lookups_not_handles(make_engine: Callable[..., Engine]) -> None:
    ttl = 0.5
    eng = make_engine(workers=1, result_ttl=ttl)
    h = eng.submit(lambda: "value")
    assert h.result(timeout=30) == "value"
    assert eng.get(h.task_id) is h
    time.sleep(ttl * 2)  # not a hope: the TTL is a fixed time after the finish
    assert eng.get(h.task_id) is None
    assert h.result(timeout=0) == "value"


def test_running_task_is_found_whatever_the_ttl(
    make_engine: Callable[..., Engine], gate: threading.Event
) -> None:
    eng = make_engine(workers=1, result_ttl=0.0)
    h = eng.submit(gate.wait)
    assert eng.get(h.task_id) is h  # not finished: the TTL has not started
    gate.set()
    h.result(timeout=30)


def test_no_ttl_keeps_results(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=1, result_ttl=None)
    h = eng.submit(int, 3)
    h.result(timeout=30)
    time.sleep(0.02)
    assert eng.get(h.task_id) is h


def test_memory_does_not_grow_with_the_number_of_tasks(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=2, max_results=100)
    gc.collect()
    before = _live_handles()
    for _ in range(20):
        batch = [eng.submit(int, i) for i in range(1000)]
        for h in batch:
            h.result(timeout=30)
        del batch, h
    gc.collect()
    grown = _live_handles() - before
    assert grown <= 100 + 10, f"{grown} handles stayed alive after 20,000 tasks"


def test_async_and_retried_tasks_do_not_leak(make_engine: Callable[..., Engine]) -> None:
    from cytask import task

    eng = make_engine(workers=2, max_results=50)

    async def coro(i: int) -> int:
        return i

    @task(engine=eng, retries=1, timeout=30)
    def flaky(i: int) -> int:
        from cytask import current_task

        if current_task().attempt == 1:
            raise ConnectionError
        return i

    for h in [eng.submit(coro, i) for i in range(500)] + [flaky.delay(i) for i in range(500)]:
        h.result(timeout=30)
    del h
    gc.collect()
    assert _live_handles() <= 50 + 10
    assert len(eng._async_ids) == 0  # no per-task bookkeeping left behind


def test_expired_results_leave_memory_without_a_lookup(
    make_engine: Callable[..., Engine], wait_until: Callable[..., None]
) -> None:
    import gc
    import weakref

    class Big:
        pass

    eng = make_engine(workers=1, result_ttl=0.05)
    h = eng.submit(Big)
    ref = weakref.ref(h.result(timeout=10))
    del h

    def collected() -> bool:
        gc.collect()
        return ref() is None

    # nobody calls get(): the engine's sweep drops the expired handle by itself
    wait_until(collected, what="the expired result to be swept from the store")
