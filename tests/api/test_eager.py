"""Eager mode (``Engine(eager=True)``): tasks run inline at submit, for users' own tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from cytask import Engine, Priority, TaskStatus, current_task, task


@pytest.fixture
def eager(make_engine: Callable[..., Engine]) -> Engine:
    return make_engine(workers=1, eager=True)


def test_submit_runs_inline_and_is_done_on_return(eager: Engine) -> None:
    h = eager.submit(lambda: threading.get_ident())
    assert h.done() and h.status is TaskStatus.SUCCEEDED
    assert h.result(timeout=0) == threading.get_ident()


def test_delay_and_apply_async_run_inline(eager: Engine) -> None:
    order: list[str] = []

    @task(engine=eager)
    def step(name: str) -> str:
        order.append(name)
        return name

    h1 = step.delay("a")
    order.append("after a")
    h2 = step.apply_async(("b",), countdown=60)  # no waiting in eager mode
    assert order == ["a", "after a", "b"]
    assert h1.result(timeout=0) == "a" and h2.result(timeout=0) == "b"


def test_failures_stay_in_the_handle(eager: Engine) -> None:
    h = eager.submit(int, "x")  # does not raise here ...
    assert h.status is TaskStatus.FAILED
    with pytest.raises(ValueError):  # ... but here, like a background task
        h.result(timeout=0)


def test_retries_run_at_once(eager: Engine) -> None:
    seen: list[int] = []

    @task(engine=eager, retries=3, retry_backoff=60)  # no back-off wait in eager mode
    def flaky() -> str:
        seen.append(current_task().attempt)
        if len(seen) < 3:
            raise ConnectionError
        return "ok"

    h = flaky.delay()
    assert h.done() and h.result(timeout=0) == "ok"
    assert seen == [1, 2, 3] and h.attempts == 3
    assert eager.stats().retried_tasks == 2


def test_nested_eager_tasks_see_their_own_handle(eager: Engine) -> None:
    @task(engine=eager)
    def inner() -> int:
        return current_task().task_id

    @task(engine=eager)
    def outer() -> tuple[int, int, int]:
        me = current_task().task_id
        child = inner.delay()
        return me, child.result(timeout=0), current_task().task_id

    h = outer.delay()
    me, child_id, me_again = h.result(timeout=0)
    assert me == h.task_id == me_again
    assert child_id != me


def test_async_task_in_eager_mode(eager: Engine) -> None:
    async def coro(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    h = eager.submit(coro, 1)
    assert h.done() and h.result(timeout=0) == 2


def test_add_task_and_counts(eager: Engine) -> None:
    out: list[int] = []
    h = eager.add_task(out.append, 5, delay=30)
    assert out == [5] and h.done()
    assert eager.stats().total_tasks_processed >= 1


def test_eager_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="Expected bool for eager, got int"):
        Engine(workers=1, eager=1)  # type: ignore[arg-type]


def test_submit_of_a_task_keeps_its_options(eager: Engine) -> None:
    # eng.submit(some_task) ran the bare function: no retries, no priority, no name
    seen: list[int] = []

    @task(engine=eager, retries=2, priority=Priority.HIGH, name="eager.flaky")
    def flaky(x: int) -> int:
        seen.append(current_task().attempt)
        if len(seen) < 3:
            raise ConnectionError
        return x * 2

    h = eager.submit(flaky, 21)
    assert h.result(timeout=0) == 42
    assert seen == [1, 2, 3] and h.attempts == 3
    assert h.priority is Priority.HIGH and h.name == "eager.flaky"
    assert h.options is flaky.options
