"""A backend for Django's Tasks framework that runs tasks on a cytask engine.

```python
# settings.py
TASKS = {
    "default": {
        "BACKEND": "cytask.contrib.django.CytaskBackend",
        "QUEUES": ["default", "emails"],               # optional, as for any backend
        "OPTIONS": {"WORKERS": 4, "DRAIN_TIMEOUT": 30},
    }
}

# tasks.py
from django.tasks import task           # Django >= 6; before it: from django_tasks import task

@task(priority=10)
def send_email(to: str) -> int: ...

result = send_email.enqueue("a@b.c")    # returns at once; a worker thread runs it
result.refresh(); result.status         # READY -> RUNNING -> SUCCESSFUL / FAILED
```

It works with ``django.tasks`` (Django 6) and, where that is missing (Python 3.11,
Django < 6), with the ``django-tasks`` backport (``django_tasks``, same names).

What it supports: ``supports_defer`` (``run_after``: the engine's timer queues the task
when it is due), ``supports_async_task`` (``async def`` tasks run on the engine's event
loop), ``supports_priority`` and ``supports_get_result`` (from any thread of the process
that enqueued the task: results live in its memory, the last ``MAX_RESULTS`` of them).

**Priorities.**  Django's -100..100 (larger runs sooner, default 0) maps onto cytask's
four strict levels: 50..100 -> CRITICAL, 1..49 -> HIGH, 0 -> NORMAL, -100..-1 -> LOW.
Within a level tasks run in the order they were enqueued.

**Queues.**  ``QUEUES`` names are checked by ``validate_task`` as Django does; every queue
of one backend shares its engine (an alias with its own ``OPTIONS`` is a separate engine).

**Options** (``OPTIONS``): ``WORKERS`` (default: ``Engine``'s), ``GIL_SHARE`` (default
0.2: the workers leave request threads the GIL, see the README), ``MAX_RESULTS``
(default 100,000), ``DRAIN_TIMEOUT`` (seconds the drain at interpreter exit may take,
default 30), ``COPY_CONTEXT`` (default True: each task runs in a copy of the enqueuing
code's ``contextvars``, as asyncio does, so request ids, tracing spans and Django's
per-request state such as the active language are there).  The engine is made on first
enqueue in each process (Django makes a backend per thread; they share one engine per
alias) and drains at exit (a second Ctrl-C then cancels what is still queued; under
gunicorn keep ``DRAIN_TIMEOUT`` below ``--graceful-timeout``, past which the master
kills the worker; ``runserver`` does not handle SIGTERM, which kills it undrained).

Each run sends ``task_started`` then ``task_finished`` (``task_enqueued`` at enqueue),
with the backend class as sender, so Django logs the lines it logs for any backend (a
failure with ``logger.exception``).  A task that never runs (cancelled by a shutdown
whose deadline passed) ends FAILED with a ``cytask.CancelledError`` in ``errors``.

**A store: results from any process.**  ``"OPTIONS": {"STORE": URL}`` (any cytask store
URL: ``sqlite:////srv/app/tasks.db``, ``redis://host:6379/0``) makes each Django task a
durable task (``Engine(store=...)``): ``enqueue()`` commits it (the result's id is the
stored task's id; ``run_after`` waits in the store; priorities map as above) and returns,
and ``get_result``/``aget_result`` read it from the store, in any process (another web
worker, a management shell: reading starts no engine).  Every process that consumes the
store runs tasks: the web process itself when ``WORKERS`` > 0 (its engine is made on its
first enqueue; ``WORKERS: 0`` only enqueues), and any worker started from the project's
folder with the project's settings::

    DJANGO_SETTINGS_MODULE=mysite.settings cytask worker cytask.contrib.django \
        --store sqlite:////srv/app/tasks.db

It stores each task as ``run_stored`` (the Django task's path, alias, queue, priority and
``run_after`` with the arguments); ``run_stored`` calls ``django.setup()`` in a process
whose apps are not ready, then runs the task as the memory store does: the signals and
Django's log lines, ``takes_context``, ``async def`` tasks on the worker's event loop,
the return value normalized to JSON; a failure is raised on, so the store keeps its
class path and traceback for ``TaskError``.  Arguments and results are JSON.

A result read from the store has its status (READY while pending or waiting for
``run_after``; RUNNING from when a worker holds it, which for a web process with workers
is at enqueue; SUCCESSFUL; FAILED, a cancelled stored task included), args and kwargs,
the return value or the last attempt's error, ``enqueued_at``, ``started_at`` and
``last_attempted_at`` (both: when the latest attempt was claimed), ``finished_at``, and
one ``worker_ids`` entry per attempt (a task whose worker died runs again), the worker's
``host:pid:nonce`` while it runs and ``''`` for the others.  ``task_enqueued`` is sent
once the task is committed, when a worker may have started it (as with Django's database
backend).  ``RESULT_TTL`` (seconds, default 3600; None keeps them) is how long this
process's engine keeps ended tasks in the store (``cytask worker --result-ttl`` for a
worker).  At shutdown a process gives the tasks it holds but has not started back to
the store (READY, for the next worker) instead of failing them.  A bad ``STORE`` raises
``ImproperlyConfigured`` when the backend is made (the store is opened then);
``COPY_CONTEXT`` and ``MAX_RESULTS`` are for the memory store.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime as dt
import inspect
import json
import logging
import os
import secrets
import threading
import time
import traceback
from collections import OrderedDict
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from django.utils.crypto import get_random_string

try:  # Django >= 6 has it here, the backport in its own utils
    from django.utils.json import normalize_json as _normalize_json
except ImportError:
    from django_tasks.utils import normalize_json as _normalize_json

try:  # Django >= 6
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import (
        Task,
        TaskContext,
        TaskError,
        TaskResult,
        TaskResultStatus,
    )
    from django.tasks.exceptions import TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
except ImportError:  # the django-tasks backport
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import (
        Task,
        TaskContext,
        TaskError,
        TaskResult,
        TaskResultStatus,
    )
    from django_tasks.exceptions import TaskResultDoesNotExist
    from django_tasks.signals import (
        task_enqueued,
        task_finished,
        task_started,
    )

try:  # newer asgiref tags Local storage with its thread (see _adopt_request_locals)
    from asgiref.local import _rehome, _Storage

    _THREAD_TAGGED_LOCALS = True
except ImportError:  # older asgiref: a copied context carries Local data as it is
    _THREAD_TAGGED_LOCALS = False

from cytask._context import current_durable_run
from cytask._core import TaskHandle, report_unraisable
from cytask._engine import Engine
from cytask._enums import Priority, TaskStatus
from cytask._store import CANCELLED, FAILED, RUNNING, SUCCEEDED, Store, TaskRecord, open_store
from cytask._validate import check_duration, check_int, check_nonneg_number
from cytask.contrib._process import at_exit, exit_drain, generation, retire

__all__ = ["CytaskBackend", "django_priority_to_cytask", "run_stored"]

log = logging.getLogger("cytask.contrib.django")


def django_priority_to_cytask(priority: int) -> Priority:
    """50..100 -> CRITICAL, 1..49 -> HIGH, 0 -> NORMAL, -100..-1 -> LOW."""
    if priority >= 50:
        return Priority.CRITICAL
    if priority > 0:
        return Priority.HIGH
    if priority == 0:
        return Priority.NORMAL
    return Priority.LOW


class _Alias:
    """One alias's engine and results, shared by the per-thread backend instances."""

    def __init__(self, alias: str, options: dict[str, Any]) -> None:
        self.alias = alias
        self.lock = threading.Lock()  # guards every field below and each result's fields
        self.store_url: str | None = options.get("STORE")
        engine_options: dict[str, Any] = {"gil_share": options.get("GIL_SHARE", 0.2)}
        if options.get("WORKERS") is not None:
            engine_options["workers"] = options["WORKERS"]
        self._reader: Store | None = None
        self._reader_generation = -1
        if self.store_url is None:
            engine_options["copy_context"] = options.get("COPY_CONTEXT", True)
        else:
            engine_options["store"] = self.store_url
            engine_options["result_ttl"] = check_duration(
                options.get("RESULT_TTL", 3600.0),
                "OPTIONS['RESULT_TTL']",
                allow_none=True,
                none_means="results are kept until deleted",
            )
            self.reader()  # a bad URL, a missing folder, a store that cannot open: now
        self.engine_options = engine_options
        self.max_results = check_int(
            options.get("MAX_RESULTS", 100_000), "OPTIONS['MAX_RESULTS']", minimum=1
        )
        self.drain_timeout = check_nonneg_number(
            options.get("DRAIN_TIMEOUT", 30.0), "OPTIONS['DRAIN_TIMEOUT']", allow_none=True
        )
        self.results: OrderedDict[str, TaskResult[Any]] = OrderedDict()
        self._engine: Engine | None = None
        self._generation = -1
        self.worker_id = get_random_string(32)

    def reader(self) -> Store:
        """This process's connection to the alias's store, for ``get_result`` (a
        process that only reads, a management shell say, starts no engine)."""
        store = self._reader
        if store is not None and self._reader_generation == generation():
            return store
        with self.lock:
            if self._reader is None or self._reader_generation != generation():
                # a fork child leaves the parent's connection alone (never closed here)
                try:
                    self._reader = open_store(self.store_url)
                except Exception as exc:  # ValueError, TypeError, StoreError, ImportError
                    raise ImproperlyConfigured(
                        f"Invalid OPTIONS['STORE'] {self.store_url!r} for task backend "
                        f"{self.alias!r}: {exc}. Use a cytask store URL such as "
                        f"'sqlite:////var/app/tasks.db' or 'redis://host:6379/0'"
                    ) from exc
                self._reader_generation = generation()
            return self._reader

    @property
    def engine(self) -> Engine:
        eng = self._engine
        if eng is not None and self._generation == generation():
            return eng
        with self.lock:
            if self._engine is None or self._generation != generation():
                retire(self._engine)
                options = self.engine_options
                run = current_durable_run.get()
                if run is not None and run.rt.store.url == self.store_url:
                    # made by a task that an engine of this process runs from the same
                    # store (a `cytask worker`): that engine consumes, this one produces
                    options = {**options, "workers": 0}
                self._engine = Engine(name=f"cytask-django-{self.alias}", **options)
                self._generation = generation()
                # a fork child's results belong to the parent
                self.results.clear()
                self.worker_id = get_random_string(32)
            return self._engine

    def drain(self) -> None:
        eng = self._engine
        if (
            eng is not None
            and self._generation == generation()
            and exit_drain(
                eng, self.drain_timeout, f"cytask engine of Django tasks backend {self.alias!r}"
            )
        ):
            s = eng.stats()
            log.info(
                "cytask engine of Django tasks backend %r drained: %d succeeded, %d failed, "
                "%d cancelled",
                self.alias,
                s.succeeded_tasks,
                s.failed_tasks,
                s.cancelled_tasks,
            )

    def remember(self, result: TaskResult[Any]) -> None:
        with self.lock:
            self.results[result.id] = result
            while len(self.results) > self.max_results:
                self.results.popitem(last=False)

    def snapshot(self, result_id: str) -> TaskResult[Any]:
        with self.lock:
            live = self.results.get(result_id)
            if live is None:
                raise TaskResultDoesNotExist(result_id)
            return _copy(live)


# (alias, options) -> its state: Django makes a backend per thread (and anew when
# settings change); all of them with the same configuration share one engine
_aliases: dict[tuple[str, str], _Alias] = {}
_aliases_lock = threading.Lock()


def _drain_all() -> None:
    for state in list(_aliases.values()):
        try:
            state.drain()
        except Exception:  # one alias's failure must not keep the others from draining
            log.exception("draining the cytask engine of backend %r failed", state.alias)


at_exit(_drain_all)


# every field, _return_value included; copied one by one (copy.copy goes through the
# dataclass's __getstate__/__setstate__, several times slower on the enqueue path)
_FIELDS = tuple(f.name for f in dataclasses.fields(TaskResult))


def _copy(result: TaskResult[Any]) -> TaskResult[Any]:
    """A snapshot the caller may keep: later changes of the live result do not show."""
    out = object.__new__(type(result))
    for name in _FIELDS:
        object.__setattr__(out, name, getattr(result, name))
    object.__setattr__(out, "errors", list(result.errors))
    object.__setattr__(out, "worker_ids", list(result.worker_ids))
    return out


def _new_id() -> str:
    """32 random URL-safe characters, as Django's backends use, from one urandom call
    (``get_random_string(32)`` draws each character apart: 25 us, 40% of an enqueue)."""
    return secrets.token_urlsafe(24)


def _set(result: TaskResult[Any], **fields: Any) -> None:
    for name, value in fields.items():
        object.__setattr__(result, name, value)


def _module_path(val: Any) -> str:
    return f"{val.__module__}.{val.__qualname__}"


class CytaskBackend(BaseTaskBackend):
    """``django.tasks`` backend: tasks run on an in-process cytask engine."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        if not isinstance(self.options, dict):
            raise TypeError(f"Expected a dict for OPTIONS, got {type(self.options).__name__}")
        known = {"WORKERS", "GIL_SHARE", "MAX_RESULTS", "DRAIN_TIMEOUT", "COPY_CONTEXT"}
        known |= {"STORE", "RESULT_TTL"}
        unknown = set(self.options) - known
        if unknown:
            raise ValueError(
                f"Unknown OPTIONS {sorted(unknown)} for CytaskBackend {alias!r}; "
                f"valid: {sorted(known)}"
            )
        _check_store_options(alias, self.options)
        key = (alias, repr(sorted(self.options.items())))
        with _aliases_lock:
            state = _aliases.get(key)
            if state is None:
                state = _aliases[key] = _Alias(alias, self.options)
        self._state = state

    @property
    def engine(self) -> Engine:
        """This alias's engine in this process (made on first use)."""
        return self._state.engine

    def enqueue(self, task: Task[Any, Any], args: Any, kwargs: Any) -> TaskResult[Any]:
        self.validate_task(task)
        state = self._state
        if state.store_url is not None:
            return _enqueue_stored(type(self), state, task, args, kwargs)
        result = _ready_result(task, _new_id(), args, kwargs, self.alias)
        delay = _delay_of(task)
        run = _run_async if inspect.iscoroutinefunction(task.func) else _run
        eng = state.engine
        _set(result, enqueued_at=timezone.now())
        state.remember(result)
        snapshot = state.snapshot(result.id)
        sender = type(self)
        # before the task can start, so the signals (and log lines) come in order
        task_enqueued.send(sender, task_result=result)
        try:
            h = eng.add_task(
                run,
                sender,
                state,
                result,
                priority=django_priority_to_cytask(task.priority),
                delay=delay,
            )
        except Exception as exc:  # EngineClosed, QueueFull: the result ends too
            _fail(sender, state, result, exc)
            raise
        h.add_done_callback(lambda h: _never_ran(sender, state, result, h))
        return snapshot

    def get_result(self, result_id: str) -> TaskResult[Any]:
        state = self._state
        if state.store_url is not None:
            return _stored_result(state, result_id)
        return state.snapshot(result_id)

    async def aget_result(self, result_id: str) -> TaskResult[Any]:
        state = self._state
        if state.store_url is not None:  # store I/O: off the event loop
            return await asyncio.to_thread(_stored_result, state, result_id)
        return state.snapshot(result_id)  # a dict lookup: no thread hop needed


def _start(sender: type, state: _Alias, result: TaskResult[Any]) -> None:
    now = timezone.now()
    with state.lock:
        _set(
            result,
            status=TaskResultStatus.RUNNING,
            started_at=result.started_at or now,
            last_attempted_at=now,
        )
        result.worker_ids.append(state.worker_id)
    task_started.send(sender, task_result=result)


def _succeed(sender: type, state: _Alias, result: TaskResult[Any], value: Any) -> None:
    try:
        value = _normalize_json(value)
    except (TypeError, ValueError) as exc:  # not JSON: the task fails, as in Django
        _fail(sender, state, result, exc)
        return
    with state.lock:
        _set(
            result,
            _return_value=value,
            finished_at=timezone.now(),
            status=TaskResultStatus.SUCCESSFUL,
        )
    task_finished.send(sender, task_result=result)


def _fail(sender: type, state: _Alias, result: TaskResult[Any], exc: BaseException) -> None:
    with state.lock:
        _mark_failed(result, exc)
    # inside the caller's `except`: Django logs the failure with logger.exception
    task_finished.send(sender, task_result=result)


def _mark_failed(result: TaskResult[Any], exc: BaseException) -> None:
    """FAILED now, with the error as Django records it (class path and traceback)."""
    result.errors.append(
        TaskError(
            exception_class_path=_module_path(type(exc)),
            traceback="".join(traceback.format_exception(exc)),
        )
    )
    _set(result, finished_at=timezone.now(), status=TaskResultStatus.FAILED)


def _adopt_request_locals() -> None:
    """Make the enqueuing request's asgiref ``Local`` data (Django's active language,
    ``set_urlconf``, ...) visible on this thread, as ``sync_to_async`` does.

    With ``COPY_CONTEXT`` the task runs in a copy of the enqueuer's context, but asgiref
    ignores Local data that a context carried into another thread unless it is moved
    there on purpose; a task enqueued by a request is such a move.
    """
    if not _THREAD_TAGGED_LOCALS:
        return
    me = threading.get_ident()
    for var, value in contextvars.copy_context().items():
        if isinstance(value, _Storage) and value.thread_id != me:
            var.set(_rehome(value))


def _call_args(result: TaskResult[Any]) -> tuple[list[Any], dict[str, Any]]:
    args = list(result.args)
    if result.task.takes_context:
        args.insert(0, TaskContext(task_result=result))
    return args, result.kwargs


def _run(sender: type, state: _Alias, result: TaskResult[Any]) -> None:
    """One run of a sync task on a worker thread, with Django's bookkeeping."""
    _adopt_request_locals()
    _start(sender, state, result)
    args, kwargs = _call_args(result)
    try:
        value = result.task.func(*args, **kwargs)
    except BaseException as exc:
        _fail(sender, state, result, exc)
        if isinstance(exc, Exception):
            raise  # the engine's handle fails too (stats, done callbacks)
        return
    _succeed(sender, state, result, value)


async def _run_async(sender: type, state: _Alias, result: TaskResult[Any]) -> None:
    """One run of an ``async def`` task on the engine's event loop."""
    _adopt_request_locals()
    _start(sender, state, result)
    args, kwargs = _call_args(result)
    try:
        value = await result.task.func(*args, **kwargs)
    except BaseException as exc:
        _fail(sender, state, result, exc)
        if isinstance(exc, Exception) and not isinstance(exc, asyncio.CancelledError):
            raise
        return
    _succeed(sender, state, result, value)


def _never_ran(sender: type, state: _Alias, result: TaskResult[Any], h: TaskHandle[Any]) -> None:
    """The engine ended the task without running it (a shutdown's deadline, QueueFull)
    or without finishing its bookkeeping (a ``task_started`` receiver raised): the
    Django result must end too, not stay READY or RUNNING forever."""
    if h.status is TaskStatus.SUCCEEDED:
        return
    with state.lock:
        if result.status not in (TaskResultStatus.READY, TaskResultStatus.RUNNING):
            return
    try:
        exc = h.exception(timeout=0)  # a cancelled handle raises its CancelledError here
    except BaseException as err:
        exc = err
    if exc is None:  # pragma: no cover - a terminal handle that did not succeed has one
        return
    try:
        raise exc  # so that Django's logger.exception records it
    except BaseException as err:
        try:
            _fail(sender, state, result, err)
        except Exception as bad:  # a receiver's error: reported, never raised here
            report_unraisable(bad, f"task_finished receivers for Django task {result.id}")


# -- the store mode (OPTIONS["STORE"]) ----------------------------------------------------

#: the stored name of every Django task (the function a worker runs; part of the
#: on-disk format: never rename)
_RUNNER_NAME = "cytask.contrib.django.run_stored"

_setup_lock = threading.Lock()


def _check_store_options(alias: str, options: dict[str, Any]) -> None:
    """Options that contradict each other, said before anything is opened."""
    store = options.get("STORE")
    if store is None:
        if "RESULT_TTL" in options:
            raise ImproperlyConfigured(
                f"OPTIONS['RESULT_TTL'] of task backend {alias!r} needs OPTIONS['STORE']: "
                f"without a store the backend keeps the last MAX_RESULTS results"
            )
        return
    if not isinstance(store, str):
        raise ImproperlyConfigured(
            f"Expected a store URL (str) for OPTIONS['STORE'] of task backend {alias!r}, "
            f"got {type(store).__name__}: use 'sqlite:////var/app/tasks.db' or "
            f"'redis://host:6379/0'"
        )
    if options.get("COPY_CONTEXT"):
        raise ImproperlyConfigured(
            f"OPTIONS['COPY_CONTEXT'] of task backend {alias!r} needs the memory store: a "
            f"stored task may run in another process, where the enqueuer's context does "
            f"not exist; remove COPY_CONTEXT or STORE"
        )
    if "MAX_RESULTS" in options:
        raise ImproperlyConfigured(
            f"OPTIONS['MAX_RESULTS'] of task backend {alias!r} is for the memory store; "
            f"with STORE, results stay RESULT_TTL seconds (default 3600)"
        )


def _timestamp(seconds: float | None) -> dt.datetime | None:
    """Store time (``time.time()``) as ``timezone.now()`` would give it."""
    if seconds is None:
        return None
    if settings.USE_TZ:
        return dt.datetime.fromtimestamp(seconds, dt.UTC)
    return dt.datetime.fromtimestamp(seconds)  # local time, as timezone.now() without USE_TZ


def _ready_result(
    task: Task[Any, Any], result_id: str, args: Any, kwargs: Any, alias: str
) -> TaskResult[Any]:
    """A READY TaskResult (Django's constructor normalizes args and kwargs to JSON)."""
    return TaskResult(
        task=task,
        id=result_id,
        status=TaskResultStatus.READY,
        enqueued_at=None,
        started_at=None,
        last_attempted_at=None,
        finished_at=None,
        args=args,
        kwargs=kwargs,
        backend=alias,
        errors=[],
        worker_ids=[],
    )


def _delay_of(task: Task[Any, Any]) -> float | None:
    """Seconds until ``run_after`` (naive only where USE_TZ is False: validate_task)."""
    if task.run_after is None:
        return None
    after: dt.datetime = task.run_after
    now = dt.datetime.now(dt.UTC) if after.tzinfo is not None else dt.datetime.now()
    return max(0.0, (after - now).total_seconds())


def _enqueue_stored(
    sender: type, state: _Alias, task: Task[Any, Any], args: Any, kwargs: Any
) -> TaskResult[Any]:
    """Commit one durable task that runs ``task`` (see ``run_stored``); returns at once."""
    result = _ready_result(task, "", args, kwargs, state.alias)  # non-JSON args fail here
    delay = _delay_of(task)
    now = time.time()
    spec = {
        "task": task.module_path,
        "backend": state.alias,
        "queue": task.queue_name,
        "priority": task.priority,
        "run_after": None if task.run_after is None else task.run_after.isoformat(),
        "enqueued_at": now,
    }
    h = state.engine.add_task(
        run_stored,
        spec,
        result.args,
        result.kwargs,
        priority=django_priority_to_cytask(task.priority),
        delay=delay,
    )
    _set(result, id=h.task_id, enqueued_at=_timestamp(now))
    # after the commit (the id is the store's): a worker may have started the task by
    # now, as with Django's database backend
    task_enqueued.send(sender, task_result=result)
    return result


def _unpack(rec: TaskRecord) -> tuple[dict[str, Any], list[Any], dict[str, Any]]:
    (spec, args, kwargs), _ = json.loads(rec.payload or "[[{}, [], {}], {}]")
    return spec, args, kwargs


def _stored_task(spec: dict[str, Any]) -> Task[Any, Any]:
    """The Django task a stored record runs, with the options it was enqueued with."""
    from django.utils.module_loading import import_string

    task = import_string(spec["task"])
    if not isinstance(task, Task):
        raise TypeError(f"Expected a Django task at {spec['task']!r}, got {type(task).__name__}")
    run_after = spec.get("run_after")
    return task.using(
        priority=spec["priority"],
        queue_name=spec["queue"],
        backend=spec["backend"],
        run_after=None if run_after is None else dt.datetime.fromisoformat(run_after),
    )


def _stored_errors(rec: TaskRecord) -> list[TaskError]:
    if rec.state == CANCELLED:
        return [
            TaskError(
                exception_class_path="cytask.CancelledError",
                traceback=f"cytask.CancelledError: task {rec.id} was cancelled\n",
            )
        ]
    if rec.state != FAILED or not rec.error:
        return []
    info = json.loads(rec.error)
    return [
        TaskError(
            exception_class_path=str(info.get("type", "builtins.Exception")),
            traceback=str(info.get("traceback") or f"{info.get('type')}: {info.get('message')}"),
        )
    ]


def _stored_result(state: _Alias, result_id: str) -> TaskResult[Any]:
    """A ``TaskResult`` read from the store: the same in every process."""
    rec = state.reader().get(result_id) if isinstance(result_id, str) else None
    if rec is None or rec.name != _RUNNER_NAME:
        raise TaskResultDoesNotExist(result_id)
    spec, args, kwargs = _unpack(rec)
    if spec.get("backend") != state.alias:
        raise TaskResultDoesNotExist(result_id)
    if rec.state == SUCCEEDED:
        status = TaskResultStatus.SUCCESSFUL
    elif rec.state in (FAILED, CANCELLED):
        status = TaskResultStatus.FAILED
    elif rec.state == RUNNING:
        status = TaskResultStatus.RUNNING
    else:  # pending, scheduled (run_after), retrying
        status = TaskResultStatus.READY
    started = _timestamp(rec.started_at)
    result: TaskResult[Any] = TaskResult(
        task=_stored_task(spec),
        id=rec.id,
        status=status,
        enqueued_at=_timestamp(spec.get("enqueued_at", rec.enqueued_at)),
        started_at=started,
        last_attempted_at=started,
        finished_at=_timestamp(rec.finished_at) if rec.state >= SUCCEEDED else None,
        args=args,
        kwargs=kwargs,
        backend=state.alias,
        errors=_stored_errors(rec),
        worker_ids=_worker_ids(rec.attempts, rec.owner),
    )
    if rec.state == SUCCEEDED and rec.result is not None:
        _set(result, _return_value=json.loads(rec.result))
    return result


def _worker_ids(attempts: int, owner: str | None) -> list[str]:
    """One entry per attempt (Django counts attempts by them): the store keeps the
    worker (``host:pid:nonce``) of the attempt in progress; the others are ''."""
    ids = [""] * attempts
    if owner and ids:
        ids[-1] = owner
    return ids


def _ensure_django() -> None:
    """Set Django up in a process that runs stored tasks without having done it (a
    ``cytask worker``): DJANGO_SETTINGS_MODULE names the project's settings."""
    from django.apps import apps

    if apps.ready:
        return
    with _setup_lock:
        if apps.ready:
            return
        if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
            raise ImproperlyConfigured(
                "Expected DJANGO_SETTINGS_MODULE in the environment of the process running "
                "Django tasks: DJANGO_SETTINGS_MODULE=mysite.settings cytask worker "
                "cytask.contrib.django --store URL"
            )
        import django

        django.setup()


def run_stored(spec: dict[str, Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Run one stored Django task (what a store's worker calls, in any process).

    The same bookkeeping as a task of the memory store: ``task_started`` and
    ``task_finished`` (Django's log lines), ``takes_context``, ``async def`` tasks (a
    coroutine the engine's event loop runs), the return value normalized to JSON.  A
    failure is raised on, so the store records it (class path, traceback) for
    ``get_result`` in any process.
    """
    _ensure_django()
    run = current_durable_run.get()
    if run is None:
        raise RuntimeError("run_stored runs Django tasks of a store: enqueue the task instead")
    task = _stored_task(spec)
    now = timezone.now()
    result: TaskResult[Any] = TaskResult(
        task=task,
        id=run.claimed.id,
        status=TaskResultStatus.RUNNING,
        enqueued_at=_timestamp(spec.get("enqueued_at")),
        started_at=now,
        last_attempted_at=now,
        finished_at=None,
        args=args,
        kwargs=kwargs,
        backend=spec["backend"],
        errors=[],
        worker_ids=_worker_ids(run.claimed.attempts, run.rt.owner),
    )
    sender = type(task.get_backend())
    if inspect.iscoroutinefunction(task.func):
        return _run_stored_async(sender, result)
    task_started.send(sender, task_result=result)
    call_args, call_kwargs = _call_args(result)
    try:
        value = task.func(*call_args, **call_kwargs)
    except BaseException as exc:
        _stored_failed(sender, result, exc)
        raise
    return _stored_succeeded(sender, result, value)


async def _run_stored_async(sender: type, result: TaskResult[Any]) -> Any:
    task_started.send(sender, task_result=result)
    call_args, call_kwargs = _call_args(result)
    try:
        value = await result.task.func(*call_args, **call_kwargs)
    except BaseException as exc:
        _stored_failed(sender, result, exc)
        raise
    return _stored_succeeded(sender, result, value)


def _stored_succeeded(sender: type, result: TaskResult[Any], value: Any) -> Any:
    try:
        value = _normalize_json(value)
    except (TypeError, ValueError) as exc:  # not JSON: the task fails, as in Django
        _stored_failed(sender, result, exc)
        raise
    _set(
        result,
        _return_value=value,
        finished_at=timezone.now(),
        status=TaskResultStatus.SUCCESSFUL,
    )
    task_finished.send(sender, task_result=result)
    return value


def _stored_failed(sender: type, result: TaskResult[Any], exc: BaseException) -> None:
    _mark_failed(result, exc)
    # inside the caller's `except`: Django logs the failure with logger.exception
    task_finished.send(sender, task_result=result)
