"""Engine(copy_context=True): tasks run in a copy of the submitter's contextvars context,
taken at submit, as asyncio does for its tasks and callbacks."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import cytask

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def read() -> str | None:
    return request_id.get()


async def aread() -> str | None:
    await asyncio.sleep(0)
    return request_id.get()


@pytest.fixture
def eng(make_engine: Callable[..., cytask.Engine]) -> cytask.Engine:
    return make_engine(workers=2, copy_context=True)


@pytest.fixture(autouse=True)
def fresh_context() -> Iterator[None]:
    token = request_id.set(None)
    yield
    request_id.reset(token)


def test_the_task_sees_the_submitters_variables(eng: cytask.Engine) -> None:
    request_id.set("r-1")
    assert eng.submit(read).result(timeout=10) == "r-1"
    assert eng.add_task(read, priority=cytask.Priority.HIGH).result(timeout=10) == "r-1"
    assert eng.as_executor().submit(read).result(timeout=10) == "r-1"


def test_the_context_is_copied_at_submit_not_at_run(
    eng: cytask.Engine, hold: Callable[..., threading.Event]
) -> None:
    gate = hold(eng, 2)  # both workers busy: the tasks below wait in the queue
    handles = []
    for rid in ("a", "b", "c"):
        request_id.set(rid)
        handles.append(eng.submit(read))
    request_id.set("later")
    gate.set()
    assert [h.result(timeout=10) for h in handles] == ["a", "b", "c"]


def test_what_the_task_sets_stays_in_its_copy(eng: cytask.Engine) -> None:
    def write() -> str | None:
        request_id.set("from task")
        return request_id.get()

    request_id.set("mine")
    assert eng.submit(write).result(timeout=10) == "from task"
    assert request_id.get() == "mine"
    assert eng.submit(read).result(timeout=10) == "mine"


def test_delays_retries_and_task_objects(eng: cytask.Engine) -> None:
    seen: list[str | None] = []

    @cytask.task(engine=eng, retries=2, retry_backoff=0.0)
    def flaky() -> str | None:
        seen.append(request_id.get())
        if len(seen) < 3:
            raise ConnectionError("again")
        return request_id.get()

    request_id.set("t")
    h = flaky.delay()
    assert h.result(timeout=10) == "t" and h.attempts == 3
    assert seen == ["t", "t", "t"]
    assert eng.submit(flaky).result(timeout=10) == "t"
    assert eng.add_task(read, delay=0.01).result(timeout=10) == "t"
    assert flaky.apply_async(countdown=0.01).result(timeout=10) == "t"


def test_async_tasks_see_the_variables_and_their_own_handle(eng: cytask.Engine) -> None:
    async def who() -> tuple[str | None, int]:
        await asyncio.sleep(0)
        return request_id.get(), cytask.current_task().task_id

    request_id.set("async")
    h = eng.submit(who)
    assert h.result(timeout=10) == ("async", h.task_id)
    assert eng.submit(aread).result(timeout=10) == "async"


def test_tasks_submitted_from_an_async_task_see_their_own_handle(eng: cytask.Engine) -> None:
    """The engine's own per-task variables are not carried over: a child submitted
    from inside an async task must not think it is its parent."""

    def sync_child() -> int:
        return cytask.current_task().task_id

    async def async_child() -> int:
        return cytask.current_task().task_id

    async def parent() -> list[int]:
        request_id.set("parent")
        hs = [eng.submit(sync_child), eng.submit(async_child)]
        got = [await h for h in hs]
        assert [await eng.submit(aread), await eng.submit(read)] == ["parent", "parent"]
        return [*got, *(h.task_id for h in hs)]

    a, b, ida, idb = eng.submit(parent).result(timeout=10)
    assert (a, b) == (ida, idb)


def test_handles_keep_the_functions_name(
    eng: cytask.Engine, hold: Callable[..., threading.Event]
) -> None:
    gate = hold(eng, 2)
    try:
        assert eng.submit(read).name == "read"
        assert eng.submit(aread).name == "aread"
        assert eng.submit(len, "x").name == "len"
    finally:
        gate.set()


def test_generator_functions_are_still_rejected_at_submit(eng: cytask.Engine) -> None:
    def gen() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator function"):
        eng.submit(gen)


def test_off_by_default(make_engine: Callable[..., cytask.Engine]) -> None:
    eng = make_engine(workers=1)
    assert eng.copy_context is False
    request_id.set("not copied")
    assert eng.submit(read).result(timeout=10) is None


def test_copy_context_must_be_a_bool(make_engine: Callable[..., Any]) -> None:
    with pytest.raises(TypeError, match="Expected bool for copy_context, got int"):
        make_engine(workers=1, copy_context=1)
