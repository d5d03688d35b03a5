"""``@task``: bare and with options, inline calls, ``delay``/``apply_async``, the handle API."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

import cytask
from cytask import Engine, Priority, Task, TaskHandle, TaskStatus, current_task, task


def test_bare_decorator_keeps_the_function(fresh_default: None) -> None:
    @task
    def add(x: int, y: int) -> int:
        """Add two numbers."""
        return x + y

    assert isinstance(add, Task)
    assert add.__name__ == "add"
    assert add.__doc__ == "Add two numbers."
    assert add.__wrapped__(1, 2) == 3  # type: ignore[attr-defined]
    assert add.name == f"{__name__}.test_bare_decorator_keeps_the_function.<locals>.add"


def test_calling_a_task_runs_it_inline(engine: Engine) -> None:
    @task(engine=engine)
    def where() -> int:
        return threading.get_ident()

    assert where() == threading.get_ident()
    assert engine.stats().submitted_tasks == 0  # nothing went through the engine


def test_delay_runs_on_a_worker_and_returns_a_handle(engine: Engine) -> None:
    @task(engine=engine)
    def add(x: int, y: int) -> tuple[int, int]:
        return x + y, threading.get_ident()

    h = add.delay(1, 2)
    assert isinstance(h, TaskHandle)
    value, ident = h.result(timeout=10)
    assert value == 3
    assert ident != threading.get_ident()
    assert engine.get(h.task_id) is h
    assert h.status is TaskStatus.SUCCEEDED and h.done()
    assert h.attempts == 1


def test_apply_async_passes_args_kwargs_and_priority(engine: Engine) -> None:
    @task(engine=engine, priority=Priority.HIGH)
    def f(a: int, *, b: int = 0) -> tuple[int, int]:
        return a, b

    h = f.apply_async(args=(1,), kwargs={"b": 2}, priority=Priority.LOW)
    assert h.result(timeout=10) == (1, 2)
    assert h.priority is Priority.LOW
    assert f.apply_async([5]).result(timeout=10) == (5, 0)  # a list works, kwargs=None
    assert f.apply_async((5,)).priority is Priority.HIGH  # the task's default
    assert f.delay(7).priority is Priority.HIGH


def test_task_priority_orders_the_queue(
    make_engine: Callable[..., Engine], gate: threading.Event
) -> None:
    eng = make_engine(workers=1)
    order: list[str] = []
    started = threading.Event()

    def blocker() -> None:
        started.set()
        gate.wait()

    prios = [Priority.LOW, Priority.NORMAL, Priority.HIGH, Priority.CRITICAL]
    tasks = {p: task(engine=eng, priority=p, name=p.name)(order.append) for p in prios}
    first = eng.submit(blocker)
    started.wait(10)  # the only worker is busy: everything below queues
    handles = [tasks[p].delay(p.name) for p in prios for _ in range(3)]
    gate.set()
    first.result(timeout=10)
    for h in handles:
        h.result(timeout=10)
    assert order == [p.name for p in reversed(prios) for _ in range(3)]


def test_name_option_and_handle_name(engine: Engine) -> None:
    @task(engine=engine, name="billing.charge")
    def charge(user_id: int, amount: float) -> str:
        return f"{user_id}:{amount}"

    assert charge.name == "billing.charge"
    assert repr(charge) == "<Task billing.charge>"
    h = charge.delay(1, 2.5)
    assert h.result(timeout=10) == "1:2.5"
    assert h.name == "billing.charge"


def test_task_exception_is_reraised_unchanged(engine: Engine) -> None:
    err = KeyError("missing")

    @task(engine=engine)
    def bad() -> None:
        raise err

    h = bad.delay()
    with pytest.raises(KeyError) as info:
        h.result(timeout=10)
    assert info.value is err
    assert h.exception(timeout=0) is err
    assert h.status is TaskStatus.FAILED


def test_current_task_is_the_running_handle(engine: Engine) -> None:
    @task(engine=engine)
    def me() -> tuple[int, int]:
        h = current_task()
        return h.task_id, h.attempt

    h = me.delay()
    assert h.result(timeout=10) == (h.task_id, 1)
    with pytest.raises(RuntimeError, match="outside a cytask task"):
        current_task()


def test_done_callbacks_run_once_with_the_handle(engine: Engine, gate: threading.Event) -> None:
    seen: list[tuple[TaskHandle[object], object]] = []
    called = threading.Event()

    def cb(h: TaskHandle[object]) -> None:
        seen.append((h, h.result(timeout=0)))
        called.set()

    h = engine.submit(gate.wait)
    h.add_done_callback(cb)
    assert seen == []  # not before the task ends
    gate.set()
    assert called.wait(10)
    assert seen == [(h, True)]
    late: list[TaskHandle[object]] = []
    h.add_done_callback(late.append)  # already done: called at once
    assert late == [h]
    assert len(seen) == 1
    with pytest.raises(TypeError, match="Expected a callable for fn"):
        h.add_done_callback(42)


def test_done_callback_errors_are_reported_not_raised(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported: list[BaseException | None] = []
    monkeypatch.setattr("sys.unraisablehook", lambda u: reported.append(u.exc_value))
    after = threading.Event()

    def bad(_: TaskHandle[object]) -> None:
        raise ValueError("callback broke")

    gate = threading.Event()
    h = engine.submit(gate.wait)
    h.add_done_callback(bad)
    h.add_done_callback(lambda _: after.set())
    gate.set()
    assert after.wait(10)  # the second callback still ran
    assert h.result(timeout=10) is True
    assert len(reported) == 1 and isinstance(reported[0], ValueError)


def test_handle_is_awaitable(engine: Engine) -> None:
    @task(engine=engine)
    def mul(x: int, y: int) -> int:
        return x * y

    async def main() -> list[int]:
        return list(await asyncio.gather(*(mul.delay(i, i) for i in range(20))))

    assert asyncio.run(main()) == [i * i for i in range(20)]


def test_awaiting_a_failed_handle_raises(engine: Engine) -> None:
    h = engine.submit(int, "nope")

    async def main() -> object:
        return await h

    with pytest.raises(ValueError, match="invalid literal"):
        asyncio.run(main())


def test_add_task_keeps_the_task_options(engine: Engine) -> None:
    calls: list[int] = []

    @task(engine=engine, retries=2)
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("try again")
        return "ok"

    h = engine.add_task(flaky)
    assert h.result(timeout=10) == "ok"
    assert h.attempts == 3
    assert h.options is flaky.options


def test_add_task_passes_kwargs_through(engine: Engine) -> None:
    h = engine.add_task(lambda a, b=0: a - b, 10, b=3, priority=Priority.CRITICAL)
    assert h.result(timeout=10) == 7
    assert h.priority is Priority.CRITICAL


def test_public_surface() -> None:
    for name in (
        "task",
        "Engine",
        "Priority",
        "TaskStatus",
        "current_task",
        "CytaskError",
        "QueueFull",
        "EngineClosed",
        "TaskTimeout",
        "default_engine",
        "set_default_engine",
        "TaskHandle",
        "Periodic",
        "EngineStats",
    ):
        assert name in cytask.__all__
        assert hasattr(cytask, name)
    assert issubclass(cytask.TaskTimeout, TimeoutError)
    assert issubclass(cytask.TaskTimeout, cytask.CytaskError)
    assert issubclass(cytask.EngineClosed, cytask.CytaskError)
    assert issubclass(cytask.QueueFull, cytask.CytaskError)


def test_full_queue_raises_queue_full_after_submit_timeout(
    make_engine: Callable[..., Engine], gate: threading.Event
) -> None:
    eng = make_engine(workers=1, queue_size=2, submit_timeout=0.05)
    started = threading.Event()
    eng.submit(lambda: (started.set(), gate.wait()))
    assert started.wait(10)
    queued = [eng.submit(int, i) for i in range(eng.queue_capacity)]
    t0 = time.monotonic()
    with pytest.raises(cytask.QueueFull, match="NORMAL queue is full") as info:
        eng.submit(int, 99)
    assert time.monotonic() - t0 >= 0.05  # it waited submit_timeout for space first
    rejected = info.value.handle
    assert rejected is not None and rejected.status is TaskStatus.FAILED  # nothing lost silently
    assert eng.add_task(int, priority=Priority.HIGH).status is TaskStatus.PENDING  # per level
    gate.set()
    assert [h.result(timeout=30) for h in queued] == list(range(eng.queue_capacity))


def test_full_queue_waits_for_space_without_submit_timeout(
    make_engine: Callable[..., Engine], gate: threading.Event
) -> None:
    eng = make_engine(workers=1, queue_size=2)  # submit_timeout=None: wait as long as needed
    started = threading.Event()
    eng.submit(lambda: (started.set(), gate.wait()))
    assert started.wait(10)
    for _ in range(eng.queue_capacity):
        eng.submit(int)
    got: list[TaskHandle[int]] = []
    submitter = threading.Thread(target=lambda: got.append(eng.submit(int, 7)))
    submitter.start()
    submitter.join(0.1)
    assert submitter.is_alive() and not got  # blocked on the full level ...
    gate.set()
    submitter.join(30)
    assert got[0].result(timeout=30) == 7  # ... until a worker made room


def test_engine_submit_of_a_task_keeps_its_options(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=1)
    calls: list[int] = []

    @task(engine=eng, retries=2, retry_on=(ConnectionError,), priority=Priority.HIGH)
    def flaky() -> str:
        calls.append(current_task().attempt)
        if len(calls) < 3:
            raise ConnectionError
        return "ok"

    h = eng.submit(flaky)
    assert h.result(timeout=30) == "ok"
    assert h.attempts == 3 and calls == [1, 2, 3]
    assert h.priority is Priority.HIGH
