"""cytask.contrib.django: a backend for Django's Tasks framework (django.tasks, or the
django-tasks backport before Django 6), with the assertions of Django's own
tests/tasks (test_immediate_backend, test_dummy_backend, test_custom_backend,
test_tasks) that apply to a backend that supports everything."""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("django")

try:
    import django.tasks as dtasks
    from django.tasks.exceptions import InvalidTask as InvalidTaskError
    from django.tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch

    LOGGER = "django.tasks"
except ImportError:
    dtasks = pytest.importorskip("django_tasks")
    from django_tasks.exceptions import (  # type: ignore[assignment]
        InvalidTaskError,
        TaskResultDoesNotExist,
        TaskResultMismatch,
    )

    LOGGER = "django_tasks"

import cytask
from cytask.contrib.django import CytaskBackend, django_priority_to_cytask

from . import djtasks
from ._server import BIN, WEB, Server

Status = dtasks.TaskResultStatus


def wait_finished(result: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not result.is_finished:
        assert time.monotonic() < deadline, f"task {result.id} still {result.status}"
        time.sleep(0.002)
        result.refresh()
    return result


def test_using_correct_backend() -> None:
    assert isinstance(dtasks.task_backends["default"], CytaskBackend)
    assert isinstance(djtasks.noop.get_backend(), CytaskBackend)
    backend = dtasks.default_task_backend
    assert backend.supports_defer and backend.supports_async_task
    assert backend.supports_get_result and backend.supports_priority
    assert backend.engine.gil_share == 0.2 and backend.engine.workers == 2


@pytest.mark.parametrize("task", [djtasks.add, djtasks.async_add])
def test_enqueue_task(task: Any) -> None:
    result = task.enqueue(2, 3)
    assert result.status == Status.READY  # a snapshot of the moment it was enqueued
    assert result.started_at is None and result.finished_at is None
    assert result.enqueued_at is not None
    assert result.task == task and result.args == [2, 3] and result.kwargs == {}
    assert result.backend == "default"
    with pytest.raises(ValueError, match="Task has not finished yet"):
        _ = result.return_value
    wait_finished(result)
    assert result.status == Status.SUCCESSFUL
    assert result.return_value == 5
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at
    assert result.attempts == 1 and len(result.worker_ids) == 1
    assert result.errors == []


def test_enqueue_async() -> None:
    async def main() -> Any:
        result = await djtasks.add.aenqueue(1, 2)
        deadline = time.monotonic() + 10
        while not result.is_finished:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.002)
            await result.arefresh()
        again = await djtasks.add.aget_result(result.id)
        return result, again

    result, again = asyncio.run(main())
    assert result.return_value == 3 and again.return_value == 3


def test_args_and_return_values_are_normalised_to_json() -> None:
    result = djtasks.echo.enqueue(1, (2, 3), key={"a": (1,)})
    assert result.args == [1, [2, 3]] and result.kwargs == {"key": {"a": [1]}}
    wait_finished(result)
    assert result.return_value == {"args": [1, [2, 3]], "kwargs": {"key": {"a": [1]}}}


@pytest.mark.parametrize(
    ("task", "exception", "message"),
    [
        (djtasks.fail_value_error, ValueError, "ValueError: This Task failed due to ValueError"),
        (djtasks.fail_system_exit, SystemExit, "SystemExit: 3"),
        (djtasks.fail_complex, djtasks.ComplexError, "ComplexError: complex"),
        (djtasks.complex_return_value, TypeError, "TypeError: Unsupported type"),
    ],
)
def test_catches_exception(task: Any, exception: type, message: str) -> None:
    result = wait_finished(task.enqueue())
    assert result.status == Status.FAILED
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value
    assert len(result.errors) == 1
    error = result.errors[0]
    assert error.exception_class is exception
    assert message in error.traceback
    assert result.started_at is not None and result.finished_at >= result.started_at


def test_get_result_and_refresh() -> None:
    result = djtasks.add.enqueue(4, 5)
    got = dtasks.default_task_backend.get_result(result.id)
    assert got.id == result.id and got.task == djtasks.add and got.args == [4, 5]
    wait_finished(got)
    assert djtasks.add.get_result(result.id).return_value == 9
    result.refresh()
    assert result.status == Status.SUCCESSFUL and result.return_value == 9
    with pytest.raises(TaskResultDoesNotExist):
        dtasks.default_task_backend.get_result("no-such-id")
    with pytest.raises(TaskResultMismatch):
        djtasks.noop.get_result(result.id)


def test_results_from_another_thread() -> None:
    result = djtasks.add.enqueue(1, 1)
    seen: list[Any] = []
    t = threading.Thread(
        target=lambda: seen.append(wait_finished(djtasks.add.get_result(result.id)))
    )
    t.start()
    t.join(timeout=20)
    assert seen and seen[0].return_value == 2


def test_takes_context() -> None:
    result = wait_finished(djtasks.with_context.enqueue(7))
    assert result.return_value == [1, result.id, 7]


def test_signals_in_order_with_the_backend_class_as_sender() -> None:
    events: list[tuple[str, Any, str]] = []
    lock = threading.Lock()
    done = threading.Event()

    def receiver(name: str) -> Any:
        def on(sender: Any, task_result: Any, **kwargs: Any) -> None:
            with lock:
                events.append((name, sender, task_result.status))
            if name == "finished":
                done.set()

        return on

    from cytask.contrib import django as contrib

    handlers = {
        "enqueued": receiver("enqueued"),
        "started": receiver("started"),
        "finished": receiver("finished"),
    }
    contrib.task_enqueued.connect(handlers["enqueued"])
    contrib.task_started.connect(handlers["started"])
    contrib.task_finished.connect(handlers["finished"])
    try:
        djtasks.noop.enqueue()
        assert done.wait(10)
    finally:
        contrib.task_enqueued.disconnect(handlers["enqueued"])
        contrib.task_started.disconnect(handlers["started"])
        contrib.task_finished.disconnect(handlers["finished"])
    assert events == [
        ("enqueued", CytaskBackend, Status.READY),
        ("started", CytaskBackend, Status.RUNNING),
        ("finished", CytaskBackend, Status.SUCCESSFUL),
    ]


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.finished = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if "state=SUCCESSFUL" in record.getMessage() or "state=FAILED" in record.getMessage():
            self.finished.set()


@pytest.fixture
def django_log() -> Iterator[Capture]:
    logger = logging.getLogger(LOGGER)
    handler = Capture()
    old = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def test_log_lines(django_log: Capture) -> None:
    result = djtasks.noop.enqueue()
    assert django_log.finished.wait(10)
    lines = [(r.levelname, r.getMessage()) for r in django_log.records]
    path = f"{djtasks.__name__}.noop"
    assert lines == [
        ("DEBUG", f"Task id={result.id} path={path} enqueued backend=default"),
        ("INFO", f"Task id={result.id} path={path} state=RUNNING"),
        ("INFO", f"Task id={result.id} path={path} state=SUCCESSFUL"),
    ]


def test_failure_is_logged_with_its_exception(django_log: Capture) -> None:
    result = djtasks.fail_value_error.enqueue()
    assert django_log.finished.wait(10)
    last = django_log.records[-1]
    assert last.levelname == "ERROR"
    assert last.getMessage().endswith(
        f"id={result.id} path={djtasks.__name__}.fail_value_error state=FAILED"
    )
    assert last.exc_info is not None and last.exc_info[0] is ValueError


@pytest.mark.parametrize(
    ("priority", "level"),
    [
        (100, "CRITICAL"),
        (50, "CRITICAL"),
        (49, "HIGH"),
        (1, "HIGH"),
        (0, "NORMAL"),
        (-1, "LOW"),
        (-100, "LOW"),
    ],
)
def test_priority_mapping(priority: int, level: str) -> None:
    assert django_priority_to_cytask(priority) is cytask.Priority[level]


def test_priorities_run_larger_first() -> None:
    djtasks.gate.clear()
    djtasks.order.clear()
    blocker = djtasks.wait_gate.using(backend="single").enqueue()
    backend = blocker.task.get_backend()
    deadline = time.monotonic() + 10
    while backend.engine.stats().active_workers < 1:  # the one worker holds the gate
        assert time.monotonic() < deadline
        time.sleep(0.001)
    results = [
        djtasks.record.using(backend="single", priority=p).enqueue(str(p))
        for p in (-50, 0, 10, 100, -1, 60)
    ]
    djtasks.gate.set()
    for r in results:
        wait_finished(r)
    assert djtasks.order == ["100", "60", "10", "0", "-50", "-1"]


def test_run_after_defers() -> None:
    run_after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.3)
    result = djtasks.add.using(run_after=run_after).enqueue(1, 2)
    assert result.status == Status.READY
    time.sleep(0.05)
    result.refresh()
    assert result.status == Status.READY  # not yet due
    wait_finished(result)
    assert result.started_at >= run_after
    assert result.return_value == 3


def test_run_after_in_the_past_runs_now() -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    assert wait_finished(djtasks.add.using(run_after=past).enqueue(1, 1)).return_value == 2


def test_queue_names() -> None:
    assert wait_finished(djtasks.add.using(queue_name="queue-1").enqueue(1, 1)).return_value == 2


def module_free_function() -> None:  # a module-level function, not a task
    return None


def test_validate_task_messages_as_django_words_them() -> None:
    from cytask.contrib.django import Task

    def local() -> None:
        return None

    with pytest.raises(
        InvalidTaskError, match=r"Task function must be defined at a module level\."
    ):
        dtasks.task(local)
    with pytest.raises(
        InvalidTaskError, match=r"^priority must be a whole number between -100 and 100\.$"
    ):
        djtasks.noop.using(priority=101)
    with pytest.raises(
        InvalidTaskError, match=r"^priority must be a whole number between -100 and 100\.$"
    ):
        djtasks.noop.using(priority=-101)
    with pytest.raises(
        InvalidTaskError, match=r"^priority must be a whole number between -100 and 100\.$"
    ):
        djtasks.noop.using(priority=1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidTaskError, match=r"run_after must be an aware datetime\."):
        djtasks.noop.using(run_after=dt.datetime.now())
    with pytest.raises(InvalidTaskError, match=r"Queue 'queue-2' is not valid for backend\."):
        djtasks.noop.using(queue_name="queue-2")
    with pytest.raises(
        InvalidTaskError,
        match=r"Task takes context but does not have a first argument of 'context'\.",
    ):
        dtasks.task(takes_context=True)(module_free_function)
    assert Task is type(djtasks.noop)


def test_many_threads_enqueue_and_every_task_ends() -> None:
    """Django makes a backend per thread: they share the alias's engine and results."""
    per_thread, threads = 300, 4
    start = threading.Barrier(threads)
    results: list[list[Any]] = [[] for _ in range(threads)]

    def producer(i: int) -> None:
        start.wait()
        results[i] = [djtasks.add.enqueue(i, n) for n in range(per_thread)]

    ts = [threading.Thread(target=producer, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    backends = {id(r[0].task.get_backend()) for r in results}
    assert len(backends) == 1  # this thread's backend, for every result's task
    for i, rs in enumerate(results):
        assert len(rs) == per_thread
        for n, r in enumerate(rs):
            assert wait_finished(r).return_value == i + n


def test_a_task_that_never_runs_ends_failed() -> None:
    """A shutdown whose deadline passes cancels queued tasks: their results end FAILED
    (with cytask's CancelledError), not READY forever."""
    djtasks.gate.clear()
    blocker = djtasks.wait_gate.using(backend="doomed").enqueue()
    backend = blocker.task.get_backend()
    queued = djtasks.add.using(backend="doomed").enqueue(1, 2)
    closer = threading.Thread(target=backend.engine.shutdown, kwargs={"timeout": 0.1})
    closer.start()
    closer.join(timeout=10)
    djtasks.gate.set()
    result = wait_finished(queued)
    assert result.status == Status.FAILED
    assert result.errors[0].exception_class is cytask.CancelledError
    assert wait_finished(blocker).status == Status.SUCCESSFUL


@pytest.mark.parametrize("task", [djtasks.read_request_id, djtasks.aread_request_id])
def test_the_enqueuers_contextvars_reach_the_task(task: Any) -> None:
    def in_request() -> Any:
        djtasks.request_id.set("req-42")
        return task.enqueue()

    result = contextvars.copy_context().run(in_request)
    assert wait_finished(result).return_value == "req-42"
    assert djtasks.request_id.get() is None


def test_the_requests_language_reaches_the_task() -> None:
    """Django's per-request state (here the active language, an asgiref Local) is
    where the task's author expects it."""
    from django.utils import translation

    with translation.override("fr"):
        result = djtasks.active_language.enqueue()
    assert wait_finished(result).return_value == "fr"


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match=r"Unknown OPTIONS \['WORKRES'\].*valid: "):
        CytaskBackend("bad", {"OPTIONS": {"WORKRES": 2}})
    with pytest.raises(TypeError, match=r"OPTIONS\['MAX_RESULTS'\]"):
        CytaskBackend("bad", {"OPTIONS": {"MAX_RESULTS": "2"}})


# -- the example project under real servers ------------------------------------------


def django_runserver(env: dict[str, str]) -> Server:
    return Server(
        [sys.executable, str(WEB / "django_app.py"), "runserver", "--noreload", "127.0.0.1:0"],
        ready=r"Starting (?:WSGI )?development server at http://127\.0\.0\.1:(\d+)/",
        env=env,
    )


def django_gunicorn(env: dict[str, str]) -> Server:
    return Server(
        [
            str(BIN / "gunicorn"),
            "--chdir",
            str(WEB),
            "-b",
            "127.0.0.1:0",
            "-w",
            "1",
            "--threads",
            "4",
            "django_app:application",
        ],
        ready=r"Listening at: http://127\.0\.0\.1:(\d+)",
        env=env,
    )


def poll(server: Server, result_id: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = server.request("GET", f"/tasks/{result_id}")[1]
        if body["status"] in ("SUCCESSFUL", "FAILED"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("start", "sig"), [(django_runserver, signal.SIGINT), (django_gunicorn, signal.SIGTERM)]
)
def test_example_project(start: Any, sig: int) -> None:
    server = start({"TASK_SECONDS": "0.1"})
    try:
        status, body = server.request("POST", "/tasks?n=7")
        assert status == 200 and body["status"] == "READY"
        assert poll(server, body["id"])["result"] == 49
        urgent = server.request("POST", "/tasks?n=3&priority=60")[1]["id"]
        later = server.request("POST", "/tasks?n=4&delay=0.2")[1]["id"]
        assert poll(server, urgent)["result"] == 9 and poll(server, later)["result"] == 16
        assert server.request("GET", "/tasks/nope")[0] == 404
        for i in range(20):
            assert server.request("POST", f"/tasks?n={i}")[0] == 200
        rc, _ = server.stop(sig)
        assert rc == 0, server.output
        assert "backend 'default' drained: 23 succeeded, 0 failed, 0 cancelled" in server.output
    finally:
        server.close()


def test_gunicorn_quick_shutdown_during_the_drain_cancels_the_queue() -> None:
    """SIGTERM, then Ctrl-C on gunicorn's master while the worker drains: the master's
    "quick shutdown" makes the worker's handler call sys.exit() inside the exit drain.
    What is queued is cancelled (each Django result FAILED, logged), the drain logs its
    line, nothing escapes into threading's exit hooks (before: "Exception ignored ...
    SystemExit", no line, queued results never ended)."""
    server = django_gunicorn({"TASK_SECONDS": "2"})
    try:
        for i in range(20):
            assert server.request("POST", f"/tasks?n={i}")[0] == 200
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for("draining")
        rc, _ = server.stop(signal.SIGINT)
        assert rc == 0, server.output
        m = server.wait_for(r"drained: (\d+) succeeded, (\d+) failed, (\d+) cancelled")
        succeeded, failed, cancelled = map(int, m.groups())
        assert failed == 0 and cancelled >= 8 and 16 <= succeeded + cancelled <= 20, m.group(0)
        assert "Exception ignored" not in server.output, server.output
    finally:
        server.close()
