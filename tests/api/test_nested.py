"""Nested submission: a task may submit tasks and wait on them, even on a one-worker engine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from cytask import Engine, TaskHandle, task


def test_waiting_on_a_child_from_a_single_worker_does_not_deadlock(
    make_engine: Callable[..., Engine],
) -> None:
    eng = make_engine(workers=1)

    @task(engine=eng)
    def child(x: int) -> int:
        return x * 2

    @task(engine=eng)
    def parent(x: int) -> int:
        return child.delay(x).result(timeout=30) + 1

    assert parent.delay(20).result(timeout=60) == 41


def test_deep_chain_on_one_worker(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=1)

    def chain(n: int) -> int:
        if n == 0:
            return 0
        return eng.submit(chain, n - 1).result(timeout=60) + 1

    assert eng.submit(chain, 15).result(timeout=90) == 15


def test_many_parents_waiting_on_children(
    make_engine: Callable[..., Engine], wait_until: Callable[..., None]
) -> None:
    eng = make_engine(workers=2, worker_idle_timeout=0.1)

    def parent(i: int) -> list[int]:
        kids = [eng.submit(lambda j=j: i * 10 + j) for j in range(3)]
        return [k.result(timeout=60) for k in kids]

    handles = [eng.submit(parent, i) for i in range(12)]
    assert [h.result(timeout=90) for h in handles] == [
        [i * 10, i * 10 + 1, i * 10 + 2] for i in range(12)
    ]
    # the stand-in workers leave once the waits are over
    wait_until(lambda: eng.stats().total_workers == 2, what="the pool to shrink back")


def test_awaiting_result_of_a_delayed_child(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=1)

    def parent() -> str:
        child: TaskHandle[str] = eng.add_task(str.upper, "late", delay=0.05)
        return child.result(timeout=30)

    assert eng.submit(parent).result(timeout=60) == "LATE"


def test_fire_and_forget_children(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=1)
    out: list[int] = []

    def parent() -> list[TaskHandle[None]]:
        return [eng.submit(out.append, i) for i in range(100)]

    kids = eng.submit(parent).result(timeout=30)
    for k in kids:
        k.result(timeout=30)
    assert out == list(range(100))  # FIFO on one worker


def test_async_parent_awaits_children(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=1)

    async def child(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    async def parent() -> list[int]:
        kids = [eng.submit(child, i) for i in range(5)]
        sync_kid = eng.submit(lambda: 100)
        return [await k for k in kids] + [await sync_kid]

    assert eng.submit(parent).result(timeout=30) == [0, 2, 4, 6, 8, 100]


def test_sync_parent_waits_on_async_child(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=1)

    async def child() -> str:
        await asyncio.sleep(0)
        return "async child"

    assert eng.submit(lambda: eng.submit(child).result(timeout=30)).result(timeout=60) == (
        "async child"
    )


def test_blocking_wait_on_an_async_child_from_the_loop_is_a_clear_error(
    make_engine: Callable[..., Engine],
) -> None:
    eng = make_engine(workers=1)

    async def child() -> int:
        return 1

    async def parent() -> int:
        return eng.submit(child).result()  # would block the loop the child needs

    with pytest.raises(RuntimeError, match="use `await handle` instead"):
        eng.submit(parent).result(timeout=30)


def test_async_parent_awaiting_a_child_with_one_async_slot(
    make_engine: Callable[..., Engine],
) -> None:
    eng = make_engine(workers=1, async_concurrency=1)

    async def child() -> int:
        return 1

    async def parent() -> int:
        return await eng.submit(child) + 1

    h = eng.submit(parent)
    finished = h.wait(timeout=3)
    eng.shutdown(wait=True, timeout=1)  # cancels the stuck coroutines
    assert finished
