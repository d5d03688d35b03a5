"""cytask.contrib.django with OPTIONS["STORE"]: a Django task is a durable task, run by
any process that consumes the store (a ``cytask worker``, or the enqueuing process's own
workers), its result read by any process.  Real processes, a real SQLite store."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")

try:
    import django.tasks as dtasks
    from django.tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch
except ImportError:
    dtasks = pytest.importorskip("django_tasks")
    from django_tasks.exceptions import (  # type: ignore[assignment]
        TaskResultDoesNotExist,
        TaskResultMismatch,
    )

from django.core.exceptions import ImproperlyConfigured

import cytask
from cytask.contrib.django import CytaskBackend

from . import djsettings, djtasks
from .test_django import wait_finished

Status = dtasks.TaskResultStatus
TESTS = Path(__file__).resolve().parents[1]  # on sys.path: `contrib.djtasks` imports
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    "DJANGO_SETTINGS_MODULE": "contrib.djsettings",
}

# a third process: Django set up from the settings module, results read from the store
READER = """
import json, sys
import django
django.setup()
try:
    from django.tasks import task_backends
except ImportError:
    from django_tasks import task_backends
backend = task_backends[sys.argv[1]]
out = {}
for result_id in sys.argv[2:]:
    r = backend.get_result(result_id)
    out[result_id] = {
        "status": str(r.status), "task": r.task.module_path, "priority": r.task.priority,
        "queue": r.task.queue_name, "run_after": r.task.run_after and r.task.run_after.isoformat(),
        "args": r.args, "kwargs": r.kwargs, "backend": r.backend,
        "return_value": r.return_value if r.status == "SUCCESSFUL" else None,
        "errors": [[e.exception_class_path, e.traceback] for e in r.errors],
        "enqueued_at": r.enqueued_at and r.enqueued_at.isoformat(),
        "started_at": r.started_at and r.started_at.isoformat(),
        "last_attempted_at": r.last_attempted_at and r.last_attempted_at.isoformat(),
        "finished_at": r.finished_at and r.finished_at.isoformat(),
        "attempts": r.attempts,
    }
try:
    backend.get_result("no-such-id")
except Exception as exc:
    out["missing"] = type(exc).__name__
print(json.dumps(out))
"""


def read_elsewhere(alias: str, *ids: str, env: dict[str, str] = ENV) -> dict[str, Any]:
    """get_result for each id, in another process."""
    proc = subprocess.run(
        [sys.executable, "-c", READER, alias, *ids],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def run_worker(
    *extra: str, store: str = djsettings.WORKER_STORE, env: dict[str, str] = ENV
) -> subprocess.CompletedProcess[str]:
    """A real `cytask worker` on the "stored" alias's store, run as the README says:
    from the project's folder (here tests/, where `contrib.djsettings` is), without
    PYTHONPATH; ``--burst``: it exits once the store holds nothing to run."""
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "cytask"), "worker", "cytask.contrib.django",
         "--store", store, "--burst", *extra],
        cwd=TESTS, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc


def when(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def test_enqueued_here_run_by_a_worker_read_by_a_third_process() -> None:
    stored = {"backend": "stored"}
    ok = djtasks.add.using(**stored).enqueue(2, 3)  # type: ignore[arg-type]
    echo = djtasks.echo.using(**stored).enqueue(1, (2, 3), key={"a": (1,)})  # type: ignore[arg-type]
    failing = djtasks.fail_value_error.using(**stored).enqueue()  # type: ignore[arg-type]
    exiting = djtasks.fail_system_exit.using(**stored).enqueue()  # type: ignore[arg-type]
    not_json = djtasks.complex_return_value.using(**stored).enqueue()  # type: ignore[arg-type]
    complex_error = djtasks.fail_complex.using(**stored).enqueue()  # type: ignore[arg-type]
    async_ok = djtasks.async_add.using(**stored).enqueue(1, 2)  # type: ignore[arg-type]
    context = djtasks.with_context.using(**stored).enqueue(7)  # type: ignore[arg-type]
    results = [ok, echo, failing, exiting, not_json, complex_error, async_ok, context]
    for r in results:  # nothing consumes the store yet: READY, here and elsewhere
        assert r.status == Status.READY and r.backend == "stored" and r.enqueued_at is not None
        assert len(r.id) == 32 and djtasks.add.get_backend().engine.get(r.id) is None
        assert dtasks.task_backends["stored"].get_result(r.id).status == Status.READY
    assert ok.args == [2, 3] and echo.args == [1, [2, 3]] and echo.kwargs == {"key": {"a": [1]}}
    before = read_elsewhere("stored", ok.id)[ok.id]
    assert before["status"] == "READY" and before["started_at"] is None
    assert before["attempts"] == 0 and before["args"] == [2, 3]

    worker = run_worker("--workers", "2")

    seen = read_elsewhere("stored", *(r.id for r in results))
    assert seen["missing"] == "TaskResultDoesNotExist"
    got = seen[ok.id]
    assert got["status"] == "SUCCESSFUL" and got["return_value"] == 5
    assert got["task"] == f"{djtasks.__name__}.add" and got["backend"] == "stored"
    assert got["args"] == [2, 3] and got["kwargs"] == {} and got["attempts"] == 1
    assert got["enqueued_at"] == ok.enqueued_at.isoformat()
    assert when(got["enqueued_at"]) <= when(got["started_at"]) <= when(got["finished_at"])
    assert got["last_attempted_at"] == got["started_at"] and got["errors"] == []
    assert seen[echo.id]["return_value"] == {"args": [1, [2, 3]], "kwargs": {"key": {"a": [1]}}}
    assert seen[async_ok.id]["return_value"] == 3
    assert seen[context.id]["return_value"] == [1, context.id, 7]
    for r, path, message in [
        (failing, "builtins.ValueError", "ValueError: This Task failed due to ValueError"),
        (exiting, "builtins.SystemExit", "SystemExit: 3"),
        (not_json, "builtins.TypeError", "TypeError: Unsupported type"),
        (complex_error, f"{djtasks.__name__}.ComplexError", "ComplexError: complex"),
    ]:
        failed = seen[r.id]
        assert failed["status"] == "FAILED" and failed["finished_at"] is not None, failed
        ((cls, tb),) = failed["errors"]
        assert cls == path and message in tb and "Traceback (most recent call last)" in tb
    # this process reads the same from the store, with Django's exception classes
    mine = dtasks.task_backends["stored"].get_result(failing.id)
    assert mine.errors[0].exception_class is ValueError
    with pytest.raises(ValueError, match="Task failed"):
        _ = mine.return_value
    exiting.refresh()
    assert exiting.errors[0].exception_class is SystemExit
    ok.refresh()
    assert ok.status == Status.SUCCESSFUL and ok.return_value == 5
    # the worker set Django up and sent task_started/task_finished: Django's log lines
    path = f"{djtasks.__name__}"
    err = worker.stderr
    assert f"Task id={ok.id} path={path}.add state=RUNNING" in err, err
    assert f"Task id={ok.id} path={path}.add state=SUCCESSFUL" in err
    assert f"Task id={async_ok.id} path={path}.async_add state=SUCCESSFUL" in err
    assert f"Task id={failing.id} path={path}.fail_value_error state=FAILED" in err
    assert "ValueError: This Task failed due to ValueError" in err  # logger.exception


def test_a_worker_without_django_settings_fails_the_task_saying_what_to_set() -> None:
    r = djtasks.add.using(backend="stored").enqueue(1, 1)
    env = {k: v for k, v in ENV.items() if k != "DJANGO_SETTINGS_MODULE"}
    run_worker(env=env)
    r.refresh()
    assert r.status == Status.FAILED
    assert r.errors[0].exception_class is ImproperlyConfigured
    assert "Expected DJANGO_SETTINGS_MODULE" in r.errors[0].traceback


def test_run_after_waits_in_the_store() -> None:
    run_after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)
    r = djtasks.add.using(backend="stored", run_after=run_after).enqueue(1, 2)
    again = dtasks.task_backends["stored"].get_result(r.id)
    assert again.status == Status.READY and again.task.run_after == run_after
    run_worker()  # --burst: stays while the task is scheduled, runs it when due
    got = read_elsewhere("stored", r.id)[r.id]
    assert got["status"] == "SUCCESSFUL" and got["return_value"] == 3
    assert got["run_after"] == run_after.isoformat()
    assert when(got["started_at"]) >= run_after


def test_priorities_order_a_workers_runs() -> None:
    priorities = (-50, 0, 10, 100, -1, 60)
    results = {p: djtasks.stamp.using(backend="stored", priority=p).enqueue() for p in priorities}
    run_worker("--workers", "1")
    seen = read_elsewhere("stored", *(r.id for r in results.values()))
    assert {p: seen[r.id]["priority"] for p, r in results.items()} == {p: p for p in priorities}
    ran_at = {p: seen[r.id]["return_value"] for p, r in results.items()}
    # Django's -100..100 onto cytask's four levels: 100 and 60 CRITICAL, 10 HIGH, 0
    # NORMAL, -1 and -50 LOW; within a level, in the order enqueued
    assert sorted(ran_at, key=ran_at.__getitem__) == [100, 60, 10, 0, -50, -1]


def test_the_enqueuing_process_runs_them_with_workers() -> None:
    """WORKERS > 0: this process consumes its store; the results are the store's."""
    events: list[tuple[str, Any, Any]] = []
    finished = threading.Event()

    def receiver(name: str) -> Any:
        def on(sender: Any, task_result: Any, **kwargs: Any) -> None:
            events.append((name, sender, task_result.status))
            if name == "finished":
                finished.set()

        return on

    from cytask.contrib import django as contrib

    on_started, on_finished = receiver("started"), receiver("finished")
    contrib.task_started.connect(on_started)
    contrib.task_finished.connect(on_finished)
    try:
        r = djtasks.add.using(backend="stored-local").enqueue(20, 22)
        assert finished.wait(20)
    finally:
        contrib.task_started.disconnect(on_started)
        contrib.task_finished.disconnect(on_finished)
    assert events == [
        ("started", CytaskBackend, Status.RUNNING),
        ("finished", CytaskBackend, Status.SUCCESSFUL),
    ]
    wait_finished(r)
    assert r.return_value == 42 and r.attempts == 1
    engine = r.task.get_backend().engine
    assert isinstance(engine.get(r.id), cytask.DurableHandle)
    assert engine.get(r.id).result(timeout=10) == 42  # the store's own record
    context = wait_finished(djtasks.with_context.using(backend="stored-local").enqueue(5))
    assert context.return_value == [1, context.id, 5]
    async_result = djtasks.async_add.using(backend="stored-local").enqueue(1, 1)
    assert wait_finished(async_result).return_value == 2
    failed = wait_finished(djtasks.fail_value_error.using(backend="stored-local").enqueue())
    assert failed.status == Status.FAILED and failed.errors[0].exception_class is ValueError
    assert "This Task failed due to ValueError" in failed.errors[0].traceback
    # an id of another task, of no task, of a task not Django's
    with pytest.raises(TaskResultMismatch):
        djtasks.noop.using(backend="stored-local").get_result(r.id)
    with pytest.raises(TaskResultDoesNotExist):
        r.task.get_backend().get_result("no-such-id")
    with pytest.raises(TaskResultDoesNotExist):  # stored by alias "stored-local" only
        dtasks.task_backends["stored"].get_result(r.id)
    plain = engine.submit(sum, [1, 2])
    with pytest.raises(TaskResultDoesNotExist):
        r.task.get_backend().get_result(plain.task_id)


def test_run_after_defers_in_the_enqueuing_process() -> None:
    run_after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.4)
    r = djtasks.add.using(backend="stored-local", run_after=run_after).enqueue(1, 2)
    r.refresh()
    assert r.status == Status.READY
    wait_finished(r)
    assert r.started_at >= run_after and r.return_value == 3


def test_aget_result_and_aenqueue() -> None:
    async def main() -> Any:
        r = await djtasks.add.using(backend="stored-local").aenqueue(3, 4)
        deadline = time.monotonic() + 20
        while not r.is_finished:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
            await r.arefresh()
        return await djtasks.add.using(backend="stored-local").aget_result(r.id)

    assert asyncio.run(main()).return_value == 7


def test_bad_arguments_fail_at_enqueue_and_store_nothing() -> None:
    backend = dtasks.task_backends["stored"]
    before = backend._state.reader().counts()
    with pytest.raises(TypeError, match="Unsupported type"):
        djtasks.echo.using(backend="stored").enqueue(threading.Lock())
    assert backend._state.reader().counts() == before


def test_store_options_are_checked_when_the_backend_is_made(tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"Invalid OPTIONS\['STORE'\] 'ftp://x'"):
        CytaskBackend("bad", {"OPTIONS": {"STORE": "ftp://x"}})
    with pytest.raises(ImproperlyConfigured, match=r"does not exist"):
        CytaskBackend("bad", {"OPTIONS": {"STORE": f"sqlite:///{tmp_path}/no/dir/t.db"}})
    with pytest.raises(ImproperlyConfigured, match=r"Expected a store URL \(str\)"):
        CytaskBackend("bad", {"OPTIONS": {"STORE": 5}})
    store = f"sqlite:///{tmp_path}/t.db"
    with pytest.raises(ImproperlyConfigured, match=r"COPY_CONTEXT.*needs the memory store"):
        CytaskBackend("bad", {"OPTIONS": {"STORE": store, "COPY_CONTEXT": True}})
    with pytest.raises(ImproperlyConfigured, match=r"MAX_RESULTS.*RESULT_TTL"):
        CytaskBackend("bad", {"OPTIONS": {"STORE": store, "MAX_RESULTS": 5}})
    with pytest.raises(ImproperlyConfigured, match=r"RESULT_TTL.*needs OPTIONS\['STORE'\]"):
        CytaskBackend("bad", {"OPTIONS": {"RESULT_TTL": 5}})
    with pytest.raises(ValueError, match=r"RESULT_TTL"):
        CytaskBackend("bad", {"OPTIONS": {"STORE": store, "RESULT_TTL": -1}})


def test_a_redis_store(redis_url: str) -> None:
    """The same across processes with Redis: enqueued here, run by a worker, read by a
    third process."""
    from django.test import override_settings

    env = {**ENV, "CYTASK_DJANGO_REDIS": redis_url}
    alias = {"BACKEND": djsettings.BACKEND, "OPTIONS": {"STORE": redis_url, "WORKERS": 0}}
    with override_settings(TASKS={**djsettings.TASKS, "stored-redis": alias}):
        ok = djtasks.add.using(backend="stored-redis", priority=60).enqueue(2, 5)
        failing = djtasks.fail_value_error.using(backend="stored-redis").enqueue()
        assert dtasks.task_backends["stored-redis"].get_result(ok.id).status == Status.READY
        run_worker(store=redis_url, env=env)
        seen = read_elsewhere("stored-redis", ok.id, failing.id, env=env)
        assert seen[ok.id]["status"] == "SUCCESSFUL" and seen[ok.id]["return_value"] == 7
        assert seen[ok.id]["priority"] == 60 and seen[ok.id]["args"] == [2, 5]
        assert seen[failing.id]["status"] == "FAILED"
        assert seen[failing.id]["errors"][0][0] == "builtins.ValueError"
        ok.refresh()
        assert ok.status == Status.SUCCESSFUL and ok.return_value == 7


def test_many_threads_enqueue_through_the_store_and_every_task_ends() -> None:
    per_thread, threads = 100, 4
    start = threading.Barrier(threads)
    results: list[list[Any]] = [[] for _ in range(threads)]

    def producer(i: int) -> None:
        start.wait()
        task = djtasks.add.using(backend="stored-local")
        results[i] = [task.enqueue(i, n) for n in range(per_thread)]

    ts = [threading.Thread(target=producer, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    ids = {r.id for rs in results for r in rs}
    assert len(ids) == per_thread * threads
    for i, rs in enumerate(results):
        assert len(rs) == per_thread
        for n, r in enumerate(rs):
            assert wait_finished(r, timeout=30).return_value == i + n


def test_naive_datetimes_where_use_tz_is_off() -> None:
    """Without USE_TZ Django passes naive local times: run_after is one, and the
    result's times are naive local times too, as timezone.now() gives them."""
    from django.test import override_settings

    with override_settings(USE_TZ=False):
        run_after = dt.datetime.now() + dt.timedelta(seconds=0.3)
        r = djtasks.add.using(backend="stored-local", run_after=run_after).enqueue(2, 2)
        assert r.enqueued_at.tzinfo is None
        wait_finished(r)
        assert r.return_value == 4 and r.task.run_after == run_after
        assert r.enqueued_at <= run_after <= r.started_at <= r.finished_at
        assert r.finished_at <= dt.datetime.now()
