"""cytask as a Flask extension, in Flask's conventions.

```python
from flask import Flask, current_app
from cytask.contrib.flask import Cytask

tasks = Cytask()                       # no app kept on the extension

def create_app() -> Flask:
    app = Flask(__name__)
    app.config["CYTASK_WORKERS"] = 4
    tasks.init_app(app)                # state in app.extensions["cytask"]
    return app

@app.post("/emails")
def send():
    h = tasks.submit(send_email, "a@b.c")   # the current app's engine; answers at once
    return {"id": h.task_id}
```

Each app gets its own engine (several apps, app factories and tests that make an app per
test all work), made on first use in each process: a server that imports the app and
then forks workers (gunicorn ``--preload``) starts no thread before the fork, and each
worker process makes its own engine.  Results live in that process's memory, so with
several worker processes read a task's result in the process that ran it (or use a
durable store).  ``Cytask(engine=eng)`` shares one engine of yours between apps instead:
it stays yours to shut down, and ``shutdown(app)`` drains only the tasks that app
submitted through the extension (then refuses its submissions).

Configuration (``app.config``; keywords of ``Cytask(...)`` give the defaults):
``CYTASK_WORKERS`` (default: ``Engine``'s), ``CYTASK_GIL_SHARE`` (default 0.2: the
workers leave request threads the GIL, see the README), ``CYTASK_DRAIN_TIMEOUT``
(seconds the drain at exit may take, default 30), ``CYTASK_APP_CONTEXT`` (default
False: run every task submitted through the extension inside ``app.app_context()``, so
``current_app``, ``flask.g`` and extensions such as Flask-SQLAlchemy work in it; pass
``app_context=True`` per call to ``submit`` instead), ``CYTASK_COPY_CONTEXT`` (default
False: when True each task runs in a copy of the submitter's ``contextvars``, tracing
spans and request ids included; off by default because Flask keeps its request and app
contexts in context variables too, so a task would get the request's ``request`` and
``g`` after the request has ended; ``app_context=True`` gives it a fresh app context).

The engine drains when the process exits (Ctrl-C on ``flask run``, SIGTERM to a
gunicorn worker) for at most ``CYTASK_DRAIN_TIMEOUT`` seconds, or when you call
``shutdown()``.  A second Ctrl-C during the drain at exit cancels what is still queued
(the handles say so) and the process exits without waiting for the running tasks.
Under gunicorn keep ``CYTASK_DRAIN_TIMEOUT`` below ``--graceful-timeout`` (default 30 s):
past it the master kills the worker, drain or not.  ``flask run`` does not handle SIGTERM:
Python's default kills it at once, with no drain (stop it with Ctrl-C, or serve with
gunicorn, which turns SIGTERM into an orderly exit).

**Schedules** (``engine.every``, ``engine.cron``) belong to the process whose engine
made them.  Made at import under ``gunicorn --preload`` (the engine is made then, in the
master), they run once, in the master, and the workers' engines have none; made in
each worker (no ``--preload``, or in a ``post_fork`` hook), every worker runs its own
copy.  For one copy per deployment use ``--preload``, a separate process, or a store
(a stored schedule ticks once across the engines that share it).
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, current_app

from cytask._core import TaskHandle
from cytask._engine import Engine
from cytask._enums import Priority
from cytask._task import Task
from cytask._validate import check_duration, check_nonneg_number, check_priority
from cytask.contrib._process import at_exit, exit_drain, generation, retire

__all__ = ["Cytask", "CytaskState"]

R = TypeVar("R")
log = logging.getLogger("cytask.contrib.flask")


class CytaskState:
    """What the extension keeps for one app, in ``app.extensions["cytask"]``."""

    def __init__(
        self,
        app_name: str,
        engine: Engine | None,
        engine_options: dict[str, Any],
        drain_timeout: float | None,
        app_context: bool,
    ) -> None:
        self.app_name = app_name
        self.engine_options = engine_options
        self.drain_timeout = drain_timeout
        self.app_context = app_context
        self._shared = engine is not None  # an engine of the user's: never replaced
        self._engine = engine
        self._generation = generation()
        self._lock = threading.Lock()
        # a shared engine outlives this app's shutdown(): what the app submitted
        # through the extension is drained instead, and later submissions refused
        self._outstanding: set[TaskHandle[Any]] = set()
        self._closed = False
        _states.add(self)

    @property
    def engine(self) -> Engine:
        """This app's engine in this process, made on first use."""
        eng = self._engine
        if eng is not None and (self._shared or self._generation == generation()):
            return eng
        with self._lock:
            if self._engine is None or (self._generation != generation() and not self._shared):
                retire(self._engine)
                self._engine = Engine(name=f"cytask-flask-{self.app_name}", **self.engine_options)
                self._generation = generation()
            return self._engine

    @property
    def started(self) -> bool:
        """True once this process made (or was given) the engine."""
        return self._engine is not None and (self._shared or self._generation == generation())

    def submitting(self) -> Engine:
        """The engine to submit to; refused once ``shutdown()`` drained a shared one."""
        if self._closed:
            raise RuntimeError(
                f"cytask was shut down for app {self.app_name!r}: submit to the shared "
                "engine directly, or register the app again with a new Cytask(...)"
            )
        return self.engine

    def track(self, handle: TaskHandle[R]) -> TaskHandle[R]:
        """Remember `handle` until it ends, for the drain of a shared engine."""
        if self._shared:
            self._outstanding.add(handle)
            handle.add_done_callback(self._outstanding.discard)
        return handle

    def shutdown(self, timeout: float | None = None) -> None:
        """Drain the engine, if this process has one, for at most `timeout` seconds.

        A shared engine (``Cytask(engine=...)``) is its owner's and keeps running:
        only the tasks this app submitted through the extension are drained (those
        still queued after `timeout` are cancelled), and the app submits no more.
        """
        if self._shared:
            self._drain_own(timeout)
            return
        if not self.started:
            return
        eng = self.engine
        if eng.closed:
            return
        eng.shutdown(wait=True, timeout=timeout)
        self._log_drained(eng)

    def _drain_own(self, timeout: float | None) -> None:
        self._closed = True
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = list(self._outstanding)
        for h in pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not h.wait(left):
                break
        late = [h for h in pending if not h.done()]
        # those still queued are cancelled; one already running finishes on the engine
        cancelled = sum(1 for h in late if not h.running() and h.cancel())
        log.info(
            "cytask tasks of app %r drained from the shared engine: %d ended, %d cancelled, "
            "%d still running",
            self.app_name,
            len(pending) - len(late),
            cancelled,
            len(late) - cancelled,
        )

    def _drain_at_exit(self) -> None:
        what = f"cytask engine of app {self.app_name!r}"
        if self.started and exit_drain(self.engine, self.drain_timeout, what):
            self._log_drained(self.engine)

    def _log_drained(self, eng: Engine) -> None:
        s = eng.stats()
        log.info(
            "cytask engine of app %r drained: %d succeeded, %d failed, %d cancelled",
            self.app_name,
            s.succeeded_tasks,
            s.failed_tasks,
            s.cancelled_tasks,
        )


# every app's state, drained at exit (weakly held: an app dropped in a test goes away)
_states: weakref.WeakSet[CytaskState] = weakref.WeakSet()


def _drain_at_exit() -> None:
    for state in list(_states):
        try:
            state._drain_at_exit()
        except Exception:  # one app's failure must not keep the others from draining
            log.exception("draining the cytask engine of app %r failed", state.app_name)


at_exit(_drain_at_exit)


class Cytask:
    """The Flask extension: ``Cytask(app)`` or ``Cytask()`` then ``init_app(app)``.

    Keywords give the defaults that each app's ``CYTASK_*`` config overrides;
    `engine` shares one engine of yours between every app instead of one per app.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        engine: Engine | None = None,
        workers: int | None = None,
        gil_share: float = 0.2,
        drain_timeout: float | None = 30.0,
        app_context: bool = False,
        copy_context: bool = False,
    ) -> None:
        if engine is not None and not isinstance(engine, Engine):
            raise TypeError(f"Expected a cytask.Engine or None for engine, got {engine!r}")
        check_nonneg_number(drain_timeout, "drain_timeout", allow_none=True)
        if not isinstance(app_context, bool):
            raise TypeError(f"Expected bool for app_context, got {type(app_context).__name__}")
        self._engine = engine
        self._defaults: dict[str, Any] = {
            "CYTASK_WORKERS": workers,
            "CYTASK_GIL_SHARE": gil_share,
            "CYTASK_DRAIN_TIMEOUT": drain_timeout,
            "CYTASK_APP_CONTEXT": app_context,
            "CYTASK_COPY_CONTEXT": copy_context,
        }
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register with `app`; its engine starts on first use in each process."""
        if not isinstance(app, Flask):
            raise TypeError(f"Expected a flask.Flask for app, got {type(app).__name__}")
        if "cytask" in app.extensions:
            raise RuntimeError(f"cytask is already registered on app {app.name!r}")
        for key, value in self._defaults.items():
            app.config.setdefault(key, value)
        cfg = app.config
        options: dict[str, Any] = {
            "gil_share": cfg["CYTASK_GIL_SHARE"],
            "copy_context": cfg["CYTASK_COPY_CONTEXT"],
        }
        if cfg["CYTASK_WORKERS"] is not None:
            options["workers"] = cfg["CYTASK_WORKERS"]
        drain = check_nonneg_number(
            cfg["CYTASK_DRAIN_TIMEOUT"], "CYTASK_DRAIN_TIMEOUT", allow_none=True
        )
        for key in ("CYTASK_APP_CONTEXT", "CYTASK_COPY_CONTEXT"):
            if not isinstance(cfg[key], bool):
                raise TypeError(f"Expected bool for {key}, got {type(cfg[key]).__name__}")
        if self._engine is None:
            _check_engine_options(options)
        app.extensions["cytask"] = CytaskState(
            app.name, self._engine, options, drain, cfg["CYTASK_APP_CONTEXT"]
        )

    # -- for code running in an app context (requests, CLI commands, tasks) -----------

    @staticmethod
    def state(app: Flask | None = None) -> CytaskState:
        """The extension's state of `app` (default: ``current_app``)."""
        target = current_app if app is None else app
        try:
            st: CytaskState = target.extensions["cytask"]
        except KeyError:
            raise RuntimeError(
                f"cytask is not registered on app {target.name!r}: call Cytask().init_app(app)"
            ) from None
        return st

    @property
    def engine(self) -> Engine:
        """The current app's engine (made on first use in this process)."""
        return self.state().engine

    def submit(
        self,
        fn: Callable[..., R],
        /,
        *args: Any,
        app_context: bool | None = None,
        priority: Priority = Priority.NORMAL,
        delay: float | None = None,
        **kwargs: Any,
    ) -> TaskHandle[R]:
        """Run ``fn(*args, **kwargs)`` on the current app's engine; return its handle.

        With `app_context` (default: the app's ``CYTASK_APP_CONTEXT``) the task runs
        inside ``app.app_context()`` of the app that submitted it.
        """
        st = self.state()
        use_ctx = st.app_context if app_context is None else app_context
        if not isinstance(use_ctx, bool):
            raise TypeError(f"Expected bool or None for app_context, got {app_context!r}")
        eng = st.submitting()
        if not use_ctx:
            return st.track(eng.add_task(fn, *args, priority=priority, delay=delay, **kwargs))
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        if isinstance(fn, Task):  # keeps its retries and time limit, in the app context
            prio = int(check_priority(priority))
            wait = check_duration(delay, "delay", allow_none=True, none_means="no delay")
            wrapped = in_app_context(app, fn.fn)
            return st.track(eng._dispatch(wrapped, args, kwargs, prio, fn.options, wait))
        return st.track(
            eng.add_task(in_app_context(app, fn), *args, priority=priority, delay=delay, **kwargs)
        )

    def get(self, task_id: int) -> TaskHandle[Any] | None:
        """A recent task of the current app's engine in this process (see ``Engine.get``)."""
        return self.engine.get(task_id)

    def shutdown(self, app: Flask | None = None, timeout: float | None = None) -> None:
        """Drain the engine of `app` (default: the current app) now.

        A shared engine keeps running for its other users: only `app`'s own tasks are
        drained (see ``CytaskState.shutdown``).
        """
        self.state(app).shutdown(timeout)


def in_app_context(app: Flask, fn: Callable[..., R]) -> Callable[..., R]:
    """`fn` wrapped to run inside ``app.app_context()`` (async functions too)."""
    if not callable(fn):
        raise TypeError(f"Expected a callable for fn, got {type(fn).__name__}: {fn!r}")
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return await fn(*args, **kwargs)

        return run_async  # type: ignore[return-value]

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> R:
        with app.app_context():
            return fn(*args, **kwargs)

    return run


def _check_engine_options(options: dict[str, Any]) -> None:
    """Bad CYTASK_* values fail at init_app, not at the first request."""
    from cytask._validate import check_int

    if "workers" in options:
        check_int(options["workers"], "CYTASK_WORKERS", minimum=1)
    share = check_nonneg_number(options["gil_share"], "CYTASK_GIL_SHARE", positive=True)
    if share is None or share > 1.0:
        raise ValueError(f"Expected CYTASK_GIL_SHARE in (0, 1], got {options['gil_share']!r}")
