"""Engine(store=...): committed before delay() returns, run by a consumer, read by anyone."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cytask
from cytask import Engine, TaskFailed, TaskStatus, current_task, task
from cytask._store import NewTask, open_store

attempts_seen: list[int] = []


def add(x: int, y: int) -> int:
    return x + y


def flaky(fail_times: int) -> int:
    attempt = current_task().attempt
    attempts_seen.append(attempt)
    if attempt <= fail_times:
        raise ConnectionError(f"attempt {attempt}")
    return attempt


def boom() -> None:
    raise KeyError("missing")


class Custom(Exception):
    pass


def custom() -> None:
    raise Custom("mine")


gate = threading.Event()
started = threading.Event()  # set by blocked() once a worker runs it


def blocked() -> str:
    started.set()
    gate.wait(30)
    return "ok"


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for eng in made:
        eng.shutdown(wait=True, timeout=30)


def _engine(engines: list[Engine], url: str, **kw: Any) -> Engine:
    eng = Engine(store=url, **kw)
    engines.append(eng)
    return eng


def _stored(url: str, task_id: str | None = None) -> Any:
    """What another connection (as another process) sees: a task, or every count."""
    store = open_store(url)
    try:
        if task_id is None:
            return {k: v for k, v in store.counts().items() if v}
        rec = store.get(task_id)
        return None if rec is None else (rec.name, rec.state, rec.attempts)
    finally:
        store.close()


def test_delay_returns_once_committed_and_a_producer_only_engine_runs_nothing(
    engines: list[Engine], url: str
) -> None:
    eng = _engine(engines, url, workers=0)
    t = task(engine=eng)(add)
    h = t.delay(1, 2)
    assert isinstance(h, cytask.DurableHandle) and len(h.task_id) == 32
    # another connection (as another process) sees it at once: committed
    assert _stored(url, h.task_id) == (f"{add.__module__}.add", 0, 0)
    assert _stored(url) == {"pending": 1}
    time.sleep(0.05)
    assert h.status is TaskStatus.PENDING and not h.done()
    worker = _engine(engines, url, workers=2)
    assert h.result(timeout=10) == 3
    assert worker.get(h.task_id) is not None and worker.get(h.task_id).result(1) == 3  # type: ignore[union-attr]
    assert eng.get("no-such-id") is None and eng.get(12) is None


def test_a_task_committed_here_runs_at_once_and_results_survive_the_engine(
    engines: list[Engine], url: str
) -> None:
    eng = _engine(engines, url, workers=2)
    t0 = time.perf_counter()
    h = eng.submit(add, 2, 3)
    assert h.result(timeout=10) == 5
    assert time.perf_counter() - t0 < 1.0
    tid = h.task_id
    eng.shutdown()
    again = _engine(engines, url, workers=0)  # "after a restart"
    h2 = again.get(tid)
    assert h2 is not None and h2.status is TaskStatus.SUCCEEDED and h2.result(0) == 5
    assert h2.attempts == 1


def test_get_from_another_process(engines: list[Engine], url: str, tmp_path: Path) -> None:
    eng = _engine(engines, url, workers=1)
    h = eng.submit(add, 20, 22)
    h.result(timeout=10)
    code = textwrap.dedent(f"""
        import cytask
        eng = cytask.Engine(workers=0, store={url!r})
        h = eng.get({h.task_id!r})
        print(h.status.value, h.result(timeout=5), h.attempts)
        eng.shutdown()
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["succeeded", "42", "1"]


def test_a_cancelled_await_leaves_no_thread_behind(url: str) -> None:
    """An endpoint awaiting a stored task whose client went away (its await cancelled),
    for a task no worker runs yet: the await must not leave a thread of the loop's
    default executor waiting for it.  Before, each await held one for the task's whole
    run: 40 of them starved every other to_thread() (32 threads at most), and asyncio.run
    then waited for them at exit forever (a server that never exits)."""
    code = textwrap.dedent(f"""
        import asyncio, contextlib, time
        import cytask
        eng = cytask.Engine(workers=0, store={url!r})  # a web process: no worker here

        async def main():
            hs = [eng.submit(pow, 2, i) for i in range(40)]
            for h in hs:  # each await cancelled, as a request whose client went away
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(h, 0.01)
            began = time.monotonic()
            assert await asyncio.wait_for(asyncio.to_thread(lambda: 7), 10) == 7
            return time.monotonic() - began

        took = asyncio.run(main())
        print(f"to_thread after the awaits: {{took:.3f}} s")
        eng.shutdown()
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "to_thread after the awaits" in out.stdout


def test_retries_count_attempts_in_the_store(engines: list[Engine], url: str) -> None:
    eng = _engine(engines, url, workers=2)
    t = task(engine=eng, retries=3, retry_on=ConnectionError)(flaky)
    attempts_seen.clear()
    h = t.delay(2)
    assert h.result(timeout=10) == 3
    assert attempts_seen == [1, 2, 3] and h.attempts == 3
    h = t.delay(9)
    with pytest.raises(ConnectionError, match="attempt 4"):
        h.result(timeout=10)
    assert h.status is TaskStatus.FAILED and h.attempts == 4


def test_errors_come_back_by_type(engines: list[Engine], url: str) -> None:
    eng = _engine(engines, url, workers=1)
    with pytest.raises(KeyError, match="missing"):
        eng.submit(boom).result(timeout=10)
    err = eng.submit(custom).exception(timeout=10)
    assert isinstance(err, TaskFailed) and err.exception_type.endswith("Custom")
    assert "raise Custom" in err.remote_traceback


def test_json_arguments_are_checked_at_submit(engines: list[Engine], url: str) -> None:
    eng = _engine(engines, url, workers=0)
    t = task(engine=eng)(add)
    with pytest.raises(TypeError, match=r"argument 'y' \(position 1\).* is a datetime"):
        t.delay(1, dt.datetime.now())
    with pytest.raises(TypeError, match=r"argument 'y' of .*add is a set"):
        t.delay(1, y={1})
    assert _stored(url) == {}  # nothing half-stored
    t.delay([1, (2, 3)], {"k": None})  # JSON data, nested


def test_pickle_only_when_asked(engines: list[Engine], url: str) -> None:
    eng = _engine(engines, url, workers=1, serializer="pickle")
    when = dt.datetime(2026, 1, 1)
    assert eng.submit(add, when, dt.timedelta(days=1)).result(timeout=10) == dt.datetime(2026, 1, 2)
    with pytest.raises(ValueError, match="serializer"):
        Engine(workers=0, store=url, serializer="yaml")


def test_a_json_worker_refuses_pickled_tasks(engines: list[Engine], url: str) -> None:
    producer = _engine(engines, url, workers=0, serializer="pickle")
    h = producer.submit(add, 1, 2)
    _engine(engines, url, workers=1)
    err = h.exception(timeout=10)
    assert isinstance(err, ValueError) and "serializer 'pickle'" in str(err)


def test_lambdas_closures_and_local_functions_are_refused_with_a_store(
    engines: list[Engine], url: str
) -> None:
    eng = _engine(engines, url, workers=0)

    def local() -> None: ...

    with pytest.raises(TypeError, match="a lambda"):
        eng.submit(lambda: 1)
    with pytest.raises(TypeError, match="local function or closure"):
        eng.submit(local)
    with pytest.raises(TypeError, match="local function or closure"):
        task(engine=eng)(local).delay()
    with pytest.raises(TypeError, match="bound method"):
        eng.submit(threading.Event().set)
    mem = Engine(workers=1)  # the memory store runs anything
    try:
        assert mem.submit(lambda: 1).result(timeout=5) == 1
    finally:
        mem.shutdown()


def test_an_unknown_task_name_fails_with_a_reason(engines: list[Engine], url: str) -> None:
    s = open_store(url)
    s.enqueue([NewTask("x" * 32, "nowhere.missing_task", "json", "[[],{}]", 2, 0.0, 10)])
    s.close()
    eng = _engine(engines, url, workers=1)
    h = eng.get("x" * 32)
    assert h is not None
    err = h.exception(timeout=10)
    assert isinstance(err, LookupError) and "no task named 'nowhere.missing_task'" in str(err)
    assert h.status is TaskStatus.FAILED and h.attempts == 1


def test_countdown_and_cancel_persist(engines: list[Engine], url: str) -> None:
    eng = _engine(engines, url, workers=1)
    t = task(engine=eng)(add)
    t0 = time.monotonic()  # before the submit: the cancel below may take a while (a commit)
    later = t.apply_async((1, 1), countdown=0.2)
    never = t.apply_async((1, 2), countdown=30)
    assert later.status is TaskStatus.SCHEDULED
    assert never.cancel() and never.cancelled()
    assert later.result(timeout=10) == 2
    assert time.monotonic() - t0 >= 0.15
    with pytest.raises(cytask.CancelledError):
        never.result(timeout=1)


def test_submit_many_one_commit_and_memory_store(engines: list[Engine], url: str) -> None:
    eng = _engine(engines, url, workers=2)
    hs = eng.submit_many(add, [(i, 1) for i in range(500)])
    assert [h.result(timeout=20) for h in hs] == [i + 1 for i in range(500)]
    mem = Engine(workers=2)
    try:
        assert [h.result(5) for h in mem.submit_many(add, [(1, 2), [3, 4]])] == [3, 7]
        with pytest.raises(TypeError, match="index 0"):
            mem.submit_many(add, [1])
    finally:
        mem.shutdown()


def test_shutdown_gives_back_tasks_it_never_started(engines: list[Engine], url: str) -> None:
    eng = _engine(engines, url, workers=1)
    gate.clear()
    first = eng.submit(blocked)
    rest = [eng.submit(add, i, 0) for i in range(5)]  # claimed by this engine, queued
    while not first.running():
        time.sleep(0.005)
    threading.Timer(0.2, gate.set).start()
    eng.shutdown(wait=True, timeout=0.1)  # times out: the queued ones were never run
    gate.set()
    states = {h.task_id: h.status for h in rest}
    assert all(s in (TaskStatus.PENDING, TaskStatus.SUCCEEDED) for s in states.values()), states
    other = _engine(engines, url, workers=1)
    assert [other.get(h.task_id).result(timeout=10) for h in rest] == [0, 1, 2, 3, 4]  # type: ignore[union-attr]


def test_results_expire_after_result_ttl(engines: list[Engine], url: str) -> None:
    eng = _engine(engines, url, workers=1, result_ttl=0.2, lease=0.3)
    h = eng.submit(add, 1, 1)
    assert h.result(timeout=10) == 2
    deadline = time.monotonic() + 10
    while eng.get(h.task_id) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert eng.get(h.task_id) is None


def test_time_limit_fails_the_stored_task(engines: list[Engine], url: str) -> None:
    eng = _engine(engines, url, workers=1)
    gate.clear()
    t = task(engine=eng, timeout=0.2)(blocked)
    h = t.delay()
    with pytest.raises(cytask.TaskTimeout):
        h.result(timeout=10)
    gate.set()
    rec = json.loads(open_store(url).get(h.task_id).error)  # type: ignore[union-attr,arg-type]
    assert rec["type"].endswith("TaskTimeout")


def test_progress_is_stored(engines: list[Engine], url: str) -> None:
    eng = _engine(engines, url, workers=1)
    t = task(engine=eng)(_progress)
    h = t.delay()
    assert h.result(timeout=10) == "done"
    assert (h.progress, h.progress_message) == (50.0, "half")  # the last one stays


def _progress() -> str:
    me = current_task()
    me.set_progress(50, "half")
    rec = open_store(_progress_url[0]).get(me.task_id) if _progress_url else None
    _progress_seen.append(None if rec is None else (rec.progress, rec.progress_message))
    return "done"


_progress_url: list[str] = []
_progress_seen: list[Any] = []


def test_progress_is_visible_while_running(engines: list[Engine], url: str) -> None:
    _progress_url[:] = [url]
    _progress_seen.clear()
    eng = _engine(engines, url, workers=1)
    assert task(engine=eng)(_progress).delay().result(timeout=10) == "done"
    assert _progress_seen == [(50.0, "half")]


def test_workers_zero_needs_a_store() -> None:
    with pytest.raises(ValueError, match="workers"):
        Engine(workers=0)
    with pytest.raises(ValueError, match="eager"):
        Engine(store="sqlite:///x.db", eager=True)


ticks_run: list[float] = []


def tick() -> None:
    ticks_run.append(time.time())


def test_a_periodic_tick_runs_once_across_engines_of_one_store(
    engines: list[Engine], url: str
) -> None:
    ticks_run.clear()
    a = _engine(engines, url, workers=1)
    b = _engine(engines, url, workers=1)  # as a second process would
    pa, pb = a.every(0.1, tick), b.every(0.1, tick)
    time.sleep(0.75)
    pa.cancel()
    pb.cancel()
    time.sleep(0.2)  # the last submitted ones finish
    fired = pa.runs + pb.runs
    assert 5 <= fired <= 8, (pa.runs, pb.runs)  # 7 ticks of 0.1 s, +-1: not 14
    deadline = time.monotonic() + 10
    while len(ticks_run) < fired and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(ticks_run) == fired


async def async_add(x: int, y: int) -> list[Any]:
    import asyncio

    await asyncio.sleep(0.01)
    return [x + y, current_task().attempt]


def test_async_tasks_are_durable_too(engines: list[Engine], url: str) -> None:
    eng = _engine(engines, url, workers=1)
    h = task(engine=eng)(async_add).delay(2, 3)
    assert h.result(timeout=10) == [5, 1]
    assert h.status is TaskStatus.SUCCEEDED


def test_done_callbacks_local_remote_and_already_done(engines: list[Engine], url: str) -> None:
    seen: list[tuple[str, str]] = []
    done = threading.Event()

    def record(tag: str) -> Any:
        def cb(h: Any) -> None:
            seen.append((tag, h.status.value))
            if len(seen) == 3:
                done.set()

        return cb

    local = _engine(engines, url, workers=1)
    gate.clear()
    h = local.submit(blocked)
    h.add_done_callback(record("local"))
    producer = _engine(engines, url, workers=0)  # another process's view: it runs nothing
    remote = producer.get(h.task_id)
    assert remote is not None
    remote.add_done_callback(record("remote"))  # someone else runs it: the watcher sees it
    assert seen == []
    gate.set()
    h.result(timeout=10)
    h.add_done_callback(record("after"))  # already ended: at once, here
    assert done.wait(10)
    assert sorted(seen) == [("after", "succeeded"), ("local", "succeeded"), ("remote", "succeeded")]
    with pytest.raises(TypeError, match="callable"):
        h.add_done_callback(42)  # type: ignore[arg-type]


def test_as_executor_needs_the_memory_store(engines: list[Engine], url: str) -> None:
    eng = _engine(engines, url, workers=0)
    with pytest.raises(TypeError, match="without a store for as_executor"):
        eng.as_executor()


started = threading.Event()


def _wait_for_cancel() -> bool:
    started.set()
    me = current_task()
    deadline = time.monotonic() + 10
    while not me.cancel_requested and time.monotonic() < deadline:
        time.sleep(0.005)
    return me.cancel_requested


def test_cancel_of_a_task_running_here_requests_it(engines: list[Engine], url: str) -> None:
    eng = _engine(engines, url, workers=1)
    started.clear()
    h = eng.submit(_wait_for_cancel)
    assert started.wait(10)
    assert h.cancel() is False
    assert h.result(timeout=10) is True


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="fork()")
def test_a_fork_child_gets_a_store_runtime_of_its_own(tmp_path: Path, url: str) -> None:
    code = textwrap.dedent(f"""
        import os, sys, warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads
        import cytask
        from tests_fork_mod import add
        eng = cytask.Engine(workers=1, store={url!r})
        assert eng.submit(add, 1, 2).result(timeout=10) == 3
        pid = os.fork()
        if pid == 0:
            h = eng.submit(add, 20, 22)          # committed and run by the child itself
            ok = h.result(timeout=10) == 42 and eng._durable.owner.split(":")[1] == str(os.getpid())
            eng.shutdown()
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        assert eng.submit(add, 2, 2).result(timeout=10) == 4   # the parent goes on
        eng.shutdown()
        print("ok")
    """)
    (tmp_path / "tests_fork_mod.py").write_text("def add(x, y):\n    return x + y\n")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_copy_context_with_a_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="copy_context"):
        Engine(workers=1, store=f"sqlite:///{tmp_path / 'tasks.db'}", copy_context=True)


def test_a_drain_runs_what_runs_and_gives_back_what_waits(engines: list[Engine], url: str) -> None:
    eng = _engine(engines, url, workers=1, max_workers=1)  # no stand-in runs the queued
    gate.clear()
    started.clear()
    first = eng.submit(blocked)
    rest = [eng.submit(add, i, 0) for i in range(5)]  # claimed by this engine, queued
    assert started.wait(30)  # a worker runs it (the store says "running" from the claim)
    threading.Timer(0.2, gate.set).start()  # the running one may finish within the drain
    eng.shutdown(wait=True, timeout=30)
    assert first.result(timeout=0) == "ok"
    assert [h.status for h in rest] == [TaskStatus.PENDING] * 5  # back in the store, not run
    assert all(h.attempts == 0 for h in rest)
    other = _engine(engines, url, workers=1)
    assert [other.get(h.task_id).result(timeout=10) for h in rest] == [0, 1, 2, 3, 4]  # type: ignore[union-attr]
