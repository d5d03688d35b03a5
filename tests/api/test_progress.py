"""Progress: ``current_task().set_progress()`` is visible on the handle at once, and
through ``Engine.get(task_id)``."""

from __future__ import annotations

import asyncio
import threading

import pytest

from cytask import Engine, current_task, task


def test_progress_is_visible_while_the_task_runs(engine: Engine) -> None:
    step = threading.Barrier(2, timeout=30)

    @task(engine=engine)
    def job(n: int) -> str:
        me = current_task()
        for i in range(1, n + 1):
            me.set_progress(100 * i / n, message=f"step {i}/{n}")
            step.wait()  # the test reads the progress now ...
            step.wait()  # ... and lets us go on
        return "done"

    h = job.delay(5)
    assert h.progress == 0.0 and h.progress_message is None
    for i in range(1, 6):
        step.wait()
        assert h.progress == pytest.approx(20.0 * i)
        assert h.progress_message == f"step {i}/5"
        got = engine.get(h.task_id)
        assert got is h and got.progress == pytest.approx(20.0 * i)
        step.wait()
    assert h.result(timeout=30) == "done"
    assert h.progress == 100.0  # the last report stays after the task ends


def test_message_is_kept_when_only_percent_changes(engine: Engine) -> None:
    def job() -> None:
        current_task().set_progress(10, "loading")
        current_task().set_progress(20)

    h = engine.submit(job)
    h.result(timeout=10)
    assert h.progress == 20.0
    assert h.progress_message == "loading"


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((101,), ValueError, "Expected percent between 0 and 100, got 101"),
        ((-1,), ValueError, "got -1"),
        (("50",), TypeError, "Expected int or float for percent, got str"),
        ((True,), TypeError, "got bool"),
        ((50, 7), TypeError, "Expected str or None for message, got int"),
    ],
)
def test_set_progress_rejects_bad_values(
    engine: Engine, args: tuple[object, ...], error: type[Exception], match: str
) -> None:
    def job() -> None:
        current_task().set_progress(*args)

    with pytest.raises(error, match=match):
        engine.submit(job).result(timeout=10)


def test_progress_from_an_async_task(engine: Engine) -> None:
    reported = threading.Event()
    go_on = threading.Event()

    async def job() -> str:
        current_task().set_progress(42, "halfway-ish")
        reported.set()
        while not go_on.is_set():
            await asyncio.sleep(0.001)
        return "ok"

    h = engine.submit(job)
    assert reported.wait(30)
    assert (h.progress, h.progress_message) == (42.0, "halfway-ish")
    assert engine.get(h.task_id) is h
    go_on.set()
    assert h.result(timeout=30) == "ok"


def test_many_updates_from_many_tasks(engine: Engine) -> None:
    def job(i: int) -> float:
        me = current_task()
        for p in range(0, 101, 10):
            me.set_progress(p, f"{i}:{p}")
        return me.progress

    handles = [engine.submit(job, i) for i in range(200)]
    for i, h in enumerate(handles):
        assert h.result(timeout=30) == 100.0
        assert h.progress_message == f"{i}:100"
