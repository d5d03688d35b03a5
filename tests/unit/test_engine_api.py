"""The minimal engine: submit, results, errors, validation, get()."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

import cytask
from cytask import Engine, Priority, TaskStatus


def test_submit_returns_result(engine: Engine) -> None:
    h = engine.submit(pow, 2, 10)
    assert h.result(timeout=10) == 1024
    assert h.status is TaskStatus.SUCCEEDED
    assert h.done() and not h.cancelled()
    assert h.exception() is None


def test_kwargs_reach_the_task(engine: Engine) -> None:
    h = engine.submit(lambda a, *, b: (a, b), 1, b=2)
    assert h.result(timeout=10) == (1, 2)


def test_task_exception_is_reraised_and_worker_survives(make_engine) -> None:  # type: ignore[no-untyped-def]
    eng = make_engine(workers=1)

    class Boom(Exception):
        pass

    def boom() -> None:
        raise Boom("bad")

    handles = [eng.submit(boom) for _ in range(50)]
    for h in handles:
        with pytest.raises(Boom, match="bad"):
            h.result(timeout=10)
        assert h.status is TaskStatus.FAILED
        assert isinstance(h.exception(), Boom)
    # the single worker is still alive and serving
    assert eng.submit(lambda: "alive").result(timeout=10) == "alive"
    stats = eng.stats()
    assert stats.failed_tasks == 50
    assert stats.total_workers == 1


def test_result_timeout_raises_timeout_error(engine: Engine) -> None:
    gate = threading.Event()
    h = engine.submit(gate.wait)
    with pytest.raises(TimeoutError):
        h.result(timeout=0.01)
    assert not h.wait(timeout=0)
    gate.set()
    assert h.result(timeout=10) is True


def test_task_ids_are_unique_and_get_finds_recent(engine: Engine) -> None:
    handles = [engine.submit(int, i) for i in range(100)]
    ids = [h.task_id for h in handles]
    assert len(set(ids)) == 100
    for h in handles:
        assert engine.get(h.task_id) is h
    assert engine.get(10**12) is None
    assert engine.get("nope") is None


def test_result_store_is_bounded(make_engine) -> None:  # type: ignore[no-untyped-def]
    eng = make_engine(workers=1, max_results=8)
    handles = [eng.submit(int, i) for i in range(20)]
    handles[-1].result(timeout=10)
    assert eng.get(handles[0].task_id) is None  # evicted from the store ...
    assert handles[0].result(timeout=10) == 0  # ... but the user's handle keeps its result
    assert eng.get(handles[-1].task_id) is handles[-1]


def test_add_task_priority_and_alias(engine: Engine) -> None:
    assert cytask.TaskPriority is Priority
    h = engine.add_task(sum, [1, 2, 3], priority=Priority.HIGH)
    assert h.result(timeout=10) == 6
    assert h.priority is Priority.HIGH


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"workers": 0}, ValueError, "Expected workers >= 1, got 0"),
        ({"workers": "2"}, TypeError, "Expected int for workers, got str"),
        ({"workers": 1.5}, TypeError, "Expected int for workers, got float"),
        ({"queue_size": 1}, ValueError, "Expected queue_size >= 2"),
        ({"submit_timeout": -1}, ValueError, "Expected submit_timeout >= 0"),
        ({"submit_timeout": "1"}, TypeError, "for submit_timeout, got str"),
    ],
)
def test_engine_rejects_bad_arguments(kwargs: dict[str, object], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        Engine(**kwargs)  # type: ignore[arg-type]


def test_submit_rejects_non_callable(engine: Engine) -> None:
    with pytest.raises(TypeError, match="Expected a callable for fn, got int"):
        engine.submit(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Expected a callable for fn, got str"):
        engine.add_task("print")  # type: ignore[arg-type]


def test_add_task_rejects_priority_that_is_not_a_priority(engine: Engine) -> None:
    with pytest.raises(TypeError, match=r"Expected a cytask.Priority for priority .*got int: 1"):
        engine.add_task(print, priority=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got str: 'high'"):
        engine.add_task(print, priority="high")  # type: ignore[arg-type]


def test_status_enum_values() -> None:
    assert [s.value for s in TaskStatus] == [
        "pending",
        "scheduled",
        "running",
        "retrying",
        "succeeded",
        "failed",
        "cancelled",
    ]
    assert isinstance(TaskStatus.PENDING, str)
    assert TaskStatus.SUCCEEDED.terminal and not TaskStatus.RUNNING.terminal


def test_handle_is_small() -> None:
    import sys

    with Engine(workers=1) as eng:
        h = eng.submit(int)
        h.result(timeout=10)
        # no per-task Condition, lock or dict: one compact object
        assert not hasattr(h, "__dict__")
        assert sys.getsizeof(h) <= 200


def test_exception_tree() -> None:
    assert issubclass(cytask.EngineClosed, cytask.CytaskError)
    assert issubclass(cytask.EngineClosed, RuntimeError)
    assert issubclass(cytask.QueueFull, cytask.CytaskError)
    assert issubclass(cytask.TaskTimeout, TimeoutError)
    assert issubclass(cytask.InvalidTaskOptions, ValueError)
    assert cytask.CancelledError is concurrent.futures.CancelledError
