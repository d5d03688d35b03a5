"""``Engine``: the in-process task engine users create, built on the native core."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from cytask import _core, _lifecycle
from cytask._compile import plan_for
from cytask._core import TaskHandle, TaskOptions
from cytask._enums import Priority
from cytask._errors import CancelledError, EngineClosed, QueueFull, TaskTimeout
from cytask._task import Task
from cytask._timer import HandOff, Timer, TimerHandle
from cytask._validate import (
    check_callable,
    check_duration,
    check_int,
    check_nonneg_number,
    check_priority,
    check_signals,
)

if TYPE_CHECKING:
    import datetime as dt

    from cytask._aio import AsyncRunner
    from cytask._autoscale import Supervisor
    from cytask._durable import DurableRuntime
    from cytask._executor import EngineExecutor
    from cytask._periodic import Periodic
    from cytask._stats import EngineStats, StatsSampler

__all__ = ["Engine"]

R = TypeVar("R")

# Threads stuck in timed-out tasks that get a replacement worker, at most
# max(max_workers, this) at a time (past it the stuck worker stays in the pool)
MIN_STUCK_REPLACED = 8

_PENDING, _SCHEDULED, _RUNNING, _RETRYING = 0, 1, 2, 3
_SUCCEEDED, _FAILED, _CANCELLED = 4, 5, 6


class Engine(_core.Core):
    """A pool of native worker threads fed by four lock-free priority queues.

    ``workers`` threads start at once and stay; up to ``max_workers`` run while
    workers are blocked (I/O, sleeps) and work waits.  Python tasks run with the
    GIL taken once per batch; native (compiled) tasks run with no GIL.  Every
    submitted task ends in a terminal state its handle reports: succeeded, failed
    or cancelled, also on shutdown and on queue overflow.

    ``queue_size`` bounds each priority level; a submit to a full level waits up to
    ``submit_timeout`` seconds (None: as long as it takes), then raises
    ``QueueFull``.  ``get()`` finds the last ``max_results`` tasks for
    ``result_ttl`` seconds after they finish; a handle you hold keeps its result.
    ``async def`` tasks run on the engine's event loop thread, at most
    ``async_concurrency`` at once.  ``eager=True`` runs every task inline at
    submit (for your tests).

    ``gil_share`` below 1 makes the workers polite to the application's own
    threads (web apps: 0.2): while another thread (an event loop, request threads)
    runs Python, Python tasks together take at most that share of the GIL, in
    slices of about 0.5 ms; when the process goes quiet they run at full speed.
    1.0 (the default) shares the GIL the way the interpreter shares it between any
    threads, like ``ThreadPoolExecutor``, which lets a busy pool convoy an event
    loop (see the README).  Compiled (native) tasks need no GIL and are not paced.

    ``linger`` (seconds, default 0) trades a little start latency for fewer
    wake-ups under a steady stream of small tasks: an idle worker that took a task
    less than ``linger`` ago naps that long instead of parking, producers then queue
    without waking it, and it takes what came in one go (one wake-up and one GIL
    take per batch instead of per task).  A task submitted to an engine idle for
    longer than ``linger`` still starts at once.  Async web apps: 0.0005
    (``cytask.contrib.asgi``'s default); leave it 0 where a caller waits for each
    result in turn.

    ``copy_context=True`` runs each task in a copy of the submitter's ``contextvars``
    context taken at submit, as asyncio does (request ids, tracing spans); it is off by
    default because it makes ``submit`` several times dearer (see the README).

    Priority is strict by default: a worker takes the oldest task of the highest
    non-empty level, so a steady flood of CRITICAL work starves LOW.
    ``starvation_limit=N`` (opt-in aging) serves one task of a waiting level after
    N tasks of higher levels were served while it waited.

    ``store="sqlite:///tasks.db"`` makes tasks durable (see ``cytask._durable``):
    ``delay()`` returns once the task is committed, handles are ``DurableHandle``s
    read from the store by any process, ``workers=0`` only produces.  Arguments and
    results are JSON unless ``serializer="pickle"``; a task whose worker died runs
    again once its ``lease`` (seconds, extended while it runs) expires.
    """

    # the store side (cytask/_durable.py), None for the memory store; a class default
    # so that a subclass whose __init__ skipped ours still gets the core's own error
    _durable: DurableRuntime | None = None

    def __init__(
        self,
        workers: int | None = None,
        *,
        max_workers: int | None = None,
        queue_size: int = 65536,
        submit_timeout: float | None = None,
        result_ttl: float | None = 3600.0,
        max_results: int = 100_000,
        async_concurrency: int = 200,
        eager: bool = False,
        worker_idle_timeout: float = 10.0,
        name: str | None = None,
        gil_share: float = 1.0,
        starvation_limit: int | None = None,
        store: Any = None,
        serializer: str = "json",
        lease: float = 30.0,
        copy_context: bool = False,
        linger: float = 0.0,
    ) -> None:
        limits = _core.LIMITS
        if workers is None:
            workers = min(os.cpu_count() or 2, limits["workers"])
        slots = " (worker slots of one engine)"
        least = 0 if store is not None else 1  # with a store, workers=0 only produces
        check_int(workers, "workers", minimum=least, maximum=limits["workers"], why=slots)
        if max_workers is None:
            max_workers = workers
        check_int(max_workers, "max_workers", minimum=least, maximum=limits["workers"], why=slots)
        if max_workers < workers:
            raise ValueError(f"Expected max_workers >= workers ({workers}), got {max_workers}")
        check_int(
            queue_size,
            "queue_size",
            minimum=2,
            maximum=limits["queue_size"],
            why=" (slots per priority level, allocated up front)",
        )
        check_nonneg_number(submit_timeout, "submit_timeout", allow_none=True)
        check_duration(result_ttl, "result_ttl", allow_none=True, none_means="no expiry")
        check_int(
            max_results,
            "max_results",
            minimum=0,
            maximum=limits["max_results"],
            why=" (the result store is allocated up front)",
        )
        if starvation_limit is not None:
            check_int(starvation_limit, "starvation_limit", minimum=1, maximum=2**31 - 1)
        check_int(async_concurrency, "async_concurrency", minimum=1)
        if not isinstance(eager, bool):
            raise TypeError(f"Expected bool for eager, got {type(eager).__name__}")
        check_nonneg_number(worker_idle_timeout, "worker_idle_timeout", positive=True)
        if not isinstance(copy_context, bool):
            raise TypeError(f"Expected bool for copy_context, got {type(copy_context).__name__}")
        if copy_context and store is not None:
            raise ValueError(
                "copy_context=True needs the memory store: a stored task may run in another "
                "process, where the submitter's context does not exist; pass copy_context=False"
            )
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Expected str or None for name, got {type(name).__name__}")
        share = check_nonneg_number(gil_share, "gil_share", positive=True)
        if share is None or share > 1.0:
            raise ValueError(f"Expected gil_share in (0, 1], got {gil_share!r}")
        nap = check_nonneg_number(linger, "linger")
        if nap is None or nap > 0.1:
            raise ValueError(
                f"Expected linger in [0, 0.1] seconds (a nap between batches), got {linger!r}"
            )
        if eager and store is not None:
            raise ValueError("Expected store=None with eager=True: eager runs tasks inline")
        if store is not None:
            max_results = 0  # get() reads the store; native handles are internal
        self._durable = None
        self._init_core(
            queue_size,
            submit_timeout,
            max_results,
            max(workers, 1),
            worker_idle_timeout,
            starvation_limit,
        )
        self._set_gil_share(share)
        self.gil_share = share
        self._set_linger(nap)
        self.linger = nap
        self.name = name or f"cytask-{id(self):x}"
        self.workers = workers
        self.max_workers = max_workers
        self.result_ttl = result_ttl
        self.async_concurrency = async_concurrency
        self.eager = eager
        self.copy_context = copy_context
        self._lock = threading.Lock()
        self._shut_down = False
        self._accept_timed = True  # timer-held work is still accepted
        self._sampler: StatsSampler | None = None  # created by the first stats()
        self._retried = 0
        self._submit_wait = submit_timeout  # seconds, for the timer's hand-off (None: no limit)
        self._timer: Timer | None = None
        self._timer_closed = False  # under _lock: set once shutdown stops the timer
        # task_id -> (timer entry, handle) of each delayed or retrying task the timer
        # holds (under _lock): scheduled_tasks in stats(), cancelled at shutdown
        self._timed: dict[int, tuple[TimerHandle, TaskHandle[Any]]] = {}
        self._handoff: HandOff | None = None  # due tasks whose level was full
        self._async: AsyncRunner | None = None
        self._async_ids: set[int] = set()
        self._periodics: set[Periodic] = set()  # live schedules; cancel() removes one
        self._supervisor: Supervisor | None = None
        self._sweeps_results = result_ttl is not None and max_results > 0
        self._signal_drain: _lifecycle._Drain | None = None  # install_signal_handlers
        self._exit_drained = False  # a shutdown(wait=True) returned: no drain at exit
        if eager:
            self.submit = self._submit_eager  # type: ignore[method-assign]
        elif copy_context:
            self.submit = self._submit_in_context  # type: ignore[method-assign]
        if copy_context:  # imported here: it needs asyncio, which `import cytask` avoids
            from cytask._contextcopy import in_context

            self._in_context = in_context
        if store is not None:  # durable tasks (cytask/_durable.py): opened before any thread
            from cytask._durable import DurableRuntime

            self._durable = DurableRuntime(
                self, store, serializer, lease, max_workers > 0, result_ttl
            )
            self.submit = self._durable.submit  # type: ignore[method-assign,assignment]
        self._start_threads()
        _lifecycle.register(self)

    def _start_threads(self) -> None:
        self._start_workers(self.workers)
        if self._sweeps_results:
            self._sweep_results_later()
        if self.max_workers > self.workers:
            from cytask._autoscale import Supervisor

            try:
                self._supervisor = Supervisor(self, self.max_workers)
            except RuntimeError as exc:  # no thread for it: a fixed pool of `workers`
                self._spawn_failed(exc, "the auto-scaler thread (max_workers)")

    def _start_workers(self, n: int) -> None:
        """Start the pool, or none of it: a failed start stops what started, then raises."""
        for i in range(n):
            try:
                self._spawn_worker()
            except RuntimeError as exc:
                self._shut_down = True
                self._close()
                self._stop_workers()
                self._wait_workers_exit(None)  # idle workers leave at once
                raise RuntimeError(
                    f"Engine(workers={n}) could not start worker thread {i + 1}: {exc}. "
                    f"The process reached the system's thread limit; use fewer workers "
                    f"(or raise the limit: ulimit -u, pids.max)"
                ) from exc

    def __repr__(self) -> str:
        state = "closed" if self._shut_down else "running"
        return f"<Engine {self.name} {state} workers={self._live()} queued={self._queued()}>"

    # -- submission ------------------------------------------------------------

    def add_task(
        self,
        fn: Callable[..., R],
        /,
        *args: Any,
        priority: Priority = Priority.NORMAL,
        delay: float | None = None,
        **kwargs: Any,
    ) -> TaskHandle[R]:
        """Run ``fn(*args, **kwargs)`` at ``priority``, after ``delay`` seconds if given.

        Catzilla's name for submit.  A task declared with ``@task`` keeps its own
        retries and time limit.
        """
        check_callable(fn, "fn")
        prio = int(check_priority(priority))
        wait = check_duration(delay, "delay", allow_none=True, none_means="no delay")
        if isinstance(fn, Task):
            return self._submit_task(fn, args, kwargs, prio, wait)
        return self._dispatch(fn, args, kwargs, prio, None, wait)

    def submit_many(
        self,
        fn: Callable[..., R],
        iterable_of_args: Iterable[tuple[Any, ...]],
        /,
        *,
        priority: Priority | None = None,
    ) -> list[TaskHandle[R]]:
        """Submit ``fn(*args)`` for each argument tuple; with a store, in one commit."""
        check_callable(fn, "fn")
        prio = None if priority is None else int(check_priority(priority))
        if self._durable is not None:
            return self._durable.submit_many(fn, iterable_of_args, prio)  # type: ignore[return-value]
        from cytask._durable import _as_args

        calls = [_as_args(a, i) for i, a in enumerate(iterable_of_args)]
        if isinstance(fn, Task):
            p = fn.options.priority if prio is None else prio
            return [self._submit_task(fn, a, {}, p, None) for a in calls]
        p = int(Priority.NORMAL) if prio is None else prio
        return [self._dispatch(fn, a, None, p, None, None) for a in calls]

    def _submit_task(
        self,
        t: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        priority: int,
        delay: float | None,
        from_timer: bool = False,
    ) -> TaskHandle[Any]:
        if self._durable is not None:
            return self._durable.submit_task(t, args, kwargs, priority, delay)  # type: ignore[return-value]
        fn: Callable[..., Any] = t.fn
        options = t.options
        if t.compile_to_c:
            ct = t._compiled
            if ct is not None and not kwargs and not delay and not from_timer:
                fast = ct._fast
                if fast is not None and fast[1] is options and not self.eager:
                    # this task planned native before: the exact type of each argument
                    # and the globals guard are checked in C; None: plan() decides
                    h = self._submit_native_exact(fast[0], args, priority)
                    if h is not None:
                        return h
            plan = plan_for(t, args, kwargs)
            if plan is not None:
                if callable(plan):
                    fn = plan
                elif (
                    not delay
                    and not from_timer
                    and not self.eager
                    and not options.retries
                    and not options.timeout
                ):
                    return self.submit_native(
                        plan.address, args, plan.arg_kinds, plan.result_kind, priority, t.fn
                    )
                else:
                    # retries, time limits, delays, timer pushes and eager runs need the
                    # Python task machinery: run the compiled code through its
                    # (GIL-releasing) caller
                    fn = getattr(t._compiled, "_callable", None) or t.fn
        return self._dispatch(fn, args, kwargs, priority, options, delay, from_timer)

    def _dispatch(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        priority: int,
        options: TaskOptions | None,
        delay: float | None,
        from_timer: bool = False,
    ) -> TaskHandle[Any]:
        """Submit now, after `delay` s, or (`from_timer`: a periodic run on the timer
        thread) without ever waiting for queue space."""
        if self._durable is not None:
            return self._durable.submit_fn(fn, args, kwargs, priority, delay)  # type: ignore[return-value]
        if self.copy_context:
            fn = self._in_context(fn)
        if self.eager:
            return self._run_eager(fn, args, kwargs, priority, options)
        if not delay and not from_timer:
            return self._submit_handle(fn, args, kwargs, priority, options, False)
        h: TaskHandle[Any] = self._submit_handle(fn, args, kwargs, priority, options, True)
        if from_timer:
            self._push_due(h, _SCHEDULED)
        elif not self._schedule_handle(time.monotonic() + (delay or 0.0), h, _SCHEDULED):
            h._complete(_CANCELLED, CancelledError(f"task {h.task_id}: engine shut down"))
        return h

    def _schedule_handle(self, deadline: float, h: TaskHandle[Any], from_status: int) -> bool:
        """Queue `h` (SCHEDULED or RETRYING) at `deadline`; False once shut down."""
        with self._lock:
            th = self._timer_call_at_locked(deadline, False, self._enqueue_due, h, from_status)
            if th is None:
                return False
            self._timed[h.task_id] = (th, h)
        # cancelled while waiting: its entry leaves the timer (and the count) at once
        h.add_done_callback(self._unschedule)
        return True

    def _unschedule(self, h: TaskHandle[Any]) -> None:
        with self._lock:
            entry = self._timed.pop(h.task_id, None)
        if entry is not None:
            entry[0].cancel()

    def _enqueue_due(self, h: TaskHandle[Any], from_status: int) -> None:
        with self._lock:
            self._timed.pop(h.task_id, None)
        self._push_due(h, from_status)

    def _push_due(self, h: TaskHandle[Any], from_status: int) -> None:
        """Queue a due handle from the timer thread, which must never wait for space.

        A full level hands the (now PENDING) handle to the hand-off threads, which
        push it with the ordinary backpressure (QueueFull after submit_timeout).
        """
        if self._enqueue_handle(h, from_status, 0.0) is not None:
            return  # queued, or cancelled meanwhile
        if self._submit_wait == 0:
            with contextlib.suppress(QueueFull):  # fails the handle at once, never waits
                self._enqueue_handle(h, _PENDING)
            return
        with self._lock:
            if self._handoff is None:
                self._handoff = HandOff(self)
            handoff = self._handoff
        try:
            handoff.put(h, h.priority.value)
        except BaseException as exc:  # no hand-off thread: the handle must still end
            h._complete(_FAILED, exc, _PENDING)
            raise

    async def asubmit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> TaskHandle[R]:
        """``submit`` for ``async def`` code: with a store, the task is committed when
        this returns, and every request an event loop serves in one turn shares one
        commit, made on a thread of the engine (an endpoint that awaits this enqueues
        several times faster than one that calls ``submit``, whose commit blocks the
        loop each time, and a store that makes the commit wait never blocks the loop).
        With the memory store it is ``submit``, which never waits on I/O."""
        if self._durable is not None:
            return await self._durable.asubmit(fn, args, kwargs)  # type: ignore[return-value]
        return self.submit(fn, *args, **kwargs)

    def _submit_in_context(
        self, fn: Callable[..., R], /, *args: Any, **kwargs: Any
    ) -> TaskHandle[R]:
        """submit() of an engine with copy_context=True: the task runs in a copy of
        the caller's contextvars context."""
        if isinstance(fn, Task):  # through _dispatch, which copies the context
            return self._submit_task(fn, args, kwargs, fn.options.priority, None)
        check_callable(fn, "fn")
        return self._submit_handle(self._in_context(fn), args, kwargs, 2, None, False)

    def _submit_eager(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> TaskHandle[R]:
        if isinstance(fn, Task):  # keeps its retries, time limit and priority, as submit() does
            return self._submit_task(fn, args, kwargs, fn.options.priority, None)
        check_callable(fn, "fn")
        return self._run_eager(fn, args, kwargs, int(Priority.NORMAL), None)

    def _run_eager(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        priority: int,
        options: TaskOptions | None,
    ) -> TaskHandle[Any]:
        h: TaskHandle[Any] = self._submit_handle(fn, args, kwargs, priority, options, True)
        h._transition(_SCHEDULED, _PENDING)
        self._run_inline(h)
        while h._transition(_RETRYING, _PENDING):  # eager retries run at once
            self._run_inline(h)
        h.wait()  # an async task finishes on the engine's loop
        return h

    # -- scheduling: delays, periodic, cron -------------------------------------

    def _timer_call_at(
        self, deadline: float, action: Callable[..., Any], *args: Any
    ) -> TimerHandle | None:
        """Run `action` on the timer thread at `deadline`; None once shut down."""
        with self._lock:
            return self._timer_call_at_locked(deadline, False, action, *args)

    def _timer_call_at_locked(
        self, deadline: float, draining: bool, action: Callable[..., Any], *args: Any
    ) -> TimerHandle | None:
        """Under _lock.  `draining`: also while shutdown drains (time limits still
        fire for the tasks it runs), until the timer stops."""
        if not self._accept_timed and not (draining and not self._timer_closed):
            return None
        if self._timer is None:
            self._timer = Timer(self.name)
            self._timer.stop_with(self)
            self._own_thread(ident=self._timer._thread.ident)
        try:
            return self._timer.call_at(deadline, action, *args)
        except RuntimeError:  # stopped
            return None

    def _sweep_results_later(self) -> None:
        """Results past result_ttl leave the store (and memory) within ttl/2, at
        least 1 s and at most 60 s apart (result_ttl=0 must not spin the timer)."""
        assert self.result_ttl is not None
        interval = min(max(self.result_ttl / 2, 1.0), 60.0)
        # a weak reference: the timer thread must not keep an engine alive
        self._timer_call_at(time.monotonic() + interval, _sweep, weakref.ref(self))

    def _sweep_results_now(self) -> None:
        assert self.result_ttl is not None
        self._sweep_results(self.result_ttl)
        self._sweep_results_later()

    def every(
        self,
        interval: float,
        fn: Callable[..., Any],
        /,
        *args: Any,
        priority: Priority = Priority.NORMAL,
        **kwargs: Any,
    ) -> Periodic:
        """Submit ``fn(*args, **kwargs)`` every `interval` seconds, first after one interval.

        A run is skipped (counted in ``Periodic.skipped``) while the previous one has
        not finished, so runs slower than the interval never pile up.
        """
        seconds = check_duration(interval, "interval", positive=True)
        return self._recurring(fn, args, kwargs, priority, interval=seconds)

    def cron(
        self,
        expression: str,
        fn: Callable[..., Any],
        /,
        *args: Any,
        priority: Priority = Priority.NORMAL,
        tz: str | dt.tzinfo | None = None,
        **kwargs: Any,
    ) -> Periodic:
        """Submit ``fn(*args, **kwargs)`` at each minute matching a 5-field cron expression.

        Times are wall-clock times in `tz` (an IANA name such as ``"Europe/Paris"``,
        or a ``tzinfo``; default: local time), DST included, as Debian cron does.
        """
        from cytask._cron import CronExpression

        return self._recurring(fn, args, kwargs, priority, cron=CronExpression(expression, tz))

    def _recurring(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        priority: Priority,
        **schedule: Any,
    ) -> Periodic:
        from cytask._periodic import Periodic

        check_callable(fn, "fn")
        prio = int(check_priority(priority))
        self._check_open()
        p = Periodic(self, fn, args, kwargs, prio, **schedule)
        with self._lock:
            self._periodics.add(p)
        p._schedule_next()
        return p

    def _forget_periodic(self, p: Periodic) -> None:
        with self._lock:
            self._periodics.discard(p)

    # -- hooks called by the native core ----------------------------------------

    def _on_retry(self, h: TaskHandle[Any], exc: BaseException) -> bool:
        options = h.options
        assert options is not None
        if not isinstance(exc, options.retry_on) or not h._transition(_RUNNING, _RETRYING):
            return False
        self._retried += 1
        if self.eager:
            return True  # _run_eager runs it again at once
        delay = _backoff(options, h.attempts)
        if delay <= 0:
            self._enqueue_handle(h, _RETRYING)
            return True
        if self._schedule_handle(time.monotonic() + delay, h, _RETRYING):
            return True
        h._transition(_RETRYING, _RUNNING)  # shutting down: this failure is final
        self._retried -= 1
        return False

    def _on_timed_start(self, h: TaskHandle[Any]) -> TimerHandle | None:
        """An attempt with a time limit starts: arm its expiry.  The worker cancels
        the entry when the attempt returns (Core._on_timed_end), so finished tasks
        leave no timer entries behind."""
        assert h.options is not None
        # a weak reference: the entry must never keep the handle (or its result) alive
        deadline = time.monotonic() + h.options.timeout
        timer = self._timer
        if timer is not None:  # the hot path: no engine lock (a stopped timer refuses)
            try:
                return timer.call_at(deadline, self._expire, weakref.ref(h), h.attempts)
            except RuntimeError:
                return None
        with self._lock:
            return self._timer_call_at_locked(
                deadline, True, self._expire, weakref.ref(h), h.attempts
            )

    def _expire(self, ref: weakref.ref[TaskHandle[Any]], attempt: int) -> None:
        """A time limit passed: fail the handle, ask the task to stop, keep capacity."""
        h = ref()
        if h is None or h.attempts != attempt or h.task_id in self._async_ids:
            return  # gone, a later attempt, or async (its runner enforces the limit)
        assert h.options is not None
        err = TaskTimeout(
            f"task {h.task_id} ({h.name}) exceeded its time limit of {h.options.timeout} s; "
            f"its result will be discarded"
        )
        # only a RUNNING attempt times out: a handle that finished, or is waiting to
        # retry, must not be flagged (its next attempt would start cancel_requested)
        if not h._complete(_FAILED, err, _RUNNING):
            return
        h._request_cancel()
        # a fresh worker takes the stuck one's place (bounded); the stuck thread exits
        # when its task returns
        self._replace_stuck_worker(h, max(self.max_workers, MIN_STUCK_REPLACED))

    def _on_coroutine(self, h: TaskHandle[Any], coro: Any) -> None:
        if self._async is None:
            with self._lock:
                if self._async is None:
                    from cytask._aio import AsyncRunner

                    self._async = AsyncRunner(self, self.async_concurrency)
        self._async_ids.add(h.task_id)
        self._async.submit(h, coro)

    def _async_failed(self, h: TaskHandle[Any], exc: BaseException, limit: bool = False) -> None:
        """An async task raised (`limit`: passed its time limit, `exc` a TaskTimeout):
        retry it or fail it (called on the loop thread)."""
        self._async_ids.discard(h.task_id)
        options = h.options
        if (
            options is not None
            and h.attempts <= options.retries
            and not h.cancel_requested
            and not limit  # time limits are final, as for sync tasks
            and self._on_retry(h, exc)
        ):
            return
        h._complete(_FAILED, exc, _RUNNING)

    def _before_blocking_wait(self, h: TaskHandle[Any]) -> None:
        runner = self._async
        if (
            runner is not None
            and threading.current_thread() is runner._thread
            and (h.task_id in self._async_ids or _is_async_fn(h._fn_))
        ):
            # an async task of this engine blocking its own loop on another async task:
            # the child can never run, so say so instead of hanging
            raise RuntimeError(
                f"blocking wait on async task {h.task_id} from the engine's event loop would "
                f"deadlock; inside an async task use `await handle` instead"
            )
        # A task waiting on another task of this engine holds a worker while it
        # waits; without a stand-in a single-worker engine would deadlock.  (If no
        # thread can be started, it waits without one: a warning says so.)
        self._lend_slot()

    def _after_blocking_wait(self, h: TaskHandle[Any]) -> None:
        self._return_slot()

    # -- observing -------------------------------------------------------------

    def get(self, task_id: object) -> TaskHandle[Any] | None:
        """The handle of a recent task, or None once it left the store (see ``result_ttl``)."""
        if self._durable is not None:  # from the store: any process, any restart
            return self._durable.get(task_id)  # type: ignore[return-value]
        h: TaskHandle[Any] | None = super().get(task_id)
        if h is not None and self.result_ttl is not None:
            finished = h._finished_monotonic
            if finished is not None and time.monotonic() - finished > self.result_ttl:
                return None
        return h

    def dead_letters(self, limit: int = 100) -> list[TaskHandle[Any]]:
        """Stored tasks that failed for good, newest first: their retries were spent,
        or their worker died ``max_lost`` times running them.  Needs a store."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"Expected an int >= 1 for limit, got {limit!r}")
        return self._store_runtime("dead_letters").dead_letters(limit)  # type: ignore[return-value]

    def requeue(self, task_id: str) -> bool:
        """Run a dead-lettered task again (READY, attempts reset); False if that task is
        not FAILED in the store.  Needs a store."""
        if not isinstance(task_id, str):
            raise TypeError(f"Expected str for task_id, got {type(task_id).__name__}")
        return self._store_runtime("requeue").requeue(task_id)

    def _store_runtime(self, what: str) -> DurableRuntime:
        if self._durable is None:
            raise ValueError(
                f"{what}() needs a store: Engine(store='sqlite:///tasks.db') or "
                f"Engine(store='redis://host:6379/0'); this engine keeps tasks in memory"
            )
        return self._durable

    def stats(self) -> EngineStats:
        """A snapshot of queue depths, workers, throughput, latencies and memory."""
        scheduled = len(self._timed)  # O(1): stats() never walks the timer's heap
        from cytask._compile import compile_stats
        from cytask._stats import EngineStats, StatsSampler  # dataclasses: not at import

        if self._sampler is None:
            self._sampler = StatsSampler()
        return EngineStats.from_core(
            self._core_stats(),
            self,
            self._sampler,
            scheduled=scheduled,
            retried=self._retried,
            async_running=0 if self._async is None else self._async.active,
            compile=compile_stats(),
        )

    def as_executor(self) -> EngineExecutor:
        """A ``concurrent.futures.Executor`` view (real Futures) of this engine."""
        if self._durable is not None:
            raise TypeError(
                "Expected an engine without a store for as_executor(): an Executor takes any "
                "callable (closures included) and hands back Python objects, which a store "
                "cannot keep; use eng.submit() and DurableHandle.result() instead"
            )
        from cytask._executor import EngineExecutor

        return EngineExecutor(self)

    def warmup(self) -> dict[str, str]:
        """Compile every ``compile_to_c`` task now; returns {task name: backend}."""
        from cytask._compile import compile_now, registered_tasks

        return {t.name: compile_now(t).backend for t in registered_tasks()}

    # -- shutdown --------------------------------------------------------------

    def shutdown(
        self, wait: bool = True, timeout: float | None = None, cancel_pending: bool = False
    ) -> None:
        """Stop taking tasks, then finish what is queued (or cancel it).

        ``wait=True`` blocks until the workers have drained the queues and exited,
        at most ``timeout`` seconds; tasks still queued after that are cancelled.
        Delayed and retrying tasks whose time has not come are cancelled at once,
        periodic schedules stop, and running async tasks may finish within the
        timeout.  ``cancel_pending=True`` cancels queued tasks instead of running
        them.  Every handle ends in a terminal state.  Calling it twice is harmless.
        """
        check_nonneg_number(timeout, "timeout", allow_none=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._durable is not None:
            self._durable.stop_claiming(deadline)
        with self._lock:
            first = not self._shut_down
            self._shut_down = True
            self._close()
            self._accept_timed = False
            periodics = list(self._periodics)
        for p in periodics:
            p.cancel()
        self._cancel_timed()
        if cancel_pending:
            self._cancel_everything_queued("cancelled by Engine.shutdown(cancel_pending=True)")
            self._cancel_handed_off("cancelled by Engine.shutdown(cancel_pending=True)")
        if first:
            self._stop_workers()
            if self._supervisor is not None:
                self._supervisor.stop(self)
        if not wait:
            # the rest (draining, then stopping the loop and timer threads) happens in
            # the background, so no thread of this engine outlives its work
            threading.Thread(
                target=self._finish_shutdown,
                args=(deadline,),
                name=f"{self.name}-shutdown",
                daemon=True,  # what happens at interpreter exit is unchanged
            ).start()
            return
        if _core.current_worker_core() is self:
            # called by one of this engine's tasks (or a done-callback run by its worker):
            # that worker waits here instead of draining, so a stand-in drains in its place
            with contextlib.suppress(RuntimeError):  # no thread to be had: the others drain
                self._spawn_worker()
        self._finish_shutdown(deadline)

    def _orphaned(self) -> None:
        """The last reference to this engine went while its workers run (they hold
        none: see _worker_loop in pyx/core/workers.pyx).  As a collected
        ThreadPoolExecutor does, it finishes what is queued and lets its threads go:
        a shutdown(wait=False), the engine kept until it is over.  Its auto-scaler and
        event loop threads hold it weakly too."""
        # (also after a shutdown whose timeout passed while a task ran: that task's
        # worker still runs, and shutting down again waits for it)
        _lifecycle.keep(self)
        self.shutdown(wait=False)

    def _finish_shutdown(self, deadline: float | None) -> None:
        """The waiting half of shutdown(): drain, stop the event loop, stop the timer."""
        if self._handoff is not None:  # due tasks still waiting for queue space
            self._handoff.join(_remaining(deadline))
        with _lifecycle.lock_free_wait():  # a signal handler may drain from in here
            drained = self._join_workers(deadline)
        if self._async is not None:
            self._async.stop(_remaining(deadline))
        if not drained:
            self._cancel_everything_queued("cancelled: Engine.shutdown() timed out before it ran")
        elif self._queued():  # queued late (a timer's or another engine's task)
            self._cancel_everything_queued("cancelled: queued after the engine had drained")
        self._cancel_handed_off("cancelled: Engine.shutdown() timed out before it ran")
        with self._lock:
            self._timer_closed = True  # time limits of abandoned tasks no longer fire
            timer = self._timer
        if timer is not None:
            timer.stop()
        if self._durable is not None:  # last results committed, unstarted tasks given back
            self._durable.close(deadline)
        self._exit_drained = True
        _lifecycle.release(self)  # if it was dropped: its workers have left

    def _cancel_everything_queued(self, why: str) -> None:
        # producers blocked on a full level first: they stop waiting and cancel their
        # own task, so nothing lands in a ring after it was emptied
        self._abort_space_waiters(why)
        self._cancel_queued(why)

    def _cancel_timed(self) -> None:
        """Cancel the delayed and retrying tasks the timer holds (shutdown)."""
        with self._lock:
            held = list(self._timed.values())
            self._timed.clear()
        for th, h in held:
            th.cancel()
            h._complete(
                _CANCELLED,
                CancelledError(f"task {h.task_id}: engine shut down before it was due"),
            )

    def _cancel_handed_off(self, why: str) -> None:
        if self._handoff is not None:
            self._handoff.cancel_all(why)

    def _drain_at_exit(self) -> None:
        """Interpreter exit: drain, then shut down (within a signal's deadline, if any).

        The engine stays open while its workers drain, so a task that queues another
        (a bare ``@task``'s default engine included) queues it here and it runs: no new
        engine, no new thread (Python 3.12 refuses threads this late).  Delayed tasks
        not yet due and schedules are cancelled first, as by shutdown().
        """
        drain = self._signal_drain
        deadline = None if drain is None else drain.deadline
        if self._durable is not None:  # drain what it holds; the store keeps the rest
            self._durable.stop_claiming(deadline)
        if not self._shut_down:
            with self._lock:
                self._accept_timed = False
                periodics = list(self._periodics)
            for p in periodics:
                p.cancel()
            self._cancel_timed()
            self._stop_workers()  # they exit once the rings stay empty
            with _lifecycle.lock_free_wait():
                self._join_workers(deadline)
        self.shutdown(wait=True, timeout=_remaining(deadline))

    def _after_fork_in_child(self) -> None:
        """This process is a fork() child: the parent's threads do not exist here.

        What was queued, running, delayed or retrying belongs to the parent, which runs
        it: here it is cancelled.  Periodic schedules stay with the parent.  An open
        engine starts fresh workers (and timer, loop, auto-scaler on demand).
        """
        why = "was cancelled in a fork() child: it belongs to the parent process"
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._sampler = None  # its lock may have been held at the fork: a fresh one
        timer, self._timer = self._timer, None
        handoff, self._handoff = self._handoff, None
        timed, self._timed = self._timed, {}
        runner, self._async = self._async, None
        supervisor, self._supervisor = self._supervisor, None
        periodics = list(self._periodics)
        self._periodics = set()
        self._async_ids = set()
        self._signal_drain = None
        _lifecycle.keep_inherited(timer, handoff, runner, supervisor)
        try:
            self._reset_after_fork(why)  # the rings, the workers' slots, running tasks
            for p in periodics:
                p.cancel()
            # read without their locks: a thread of the parent may have held one
            doomed = [h for _, h in list(timed.values())]  # delayed, retrying
            if handoff is not None:  # due, waiting for queue space
                doomed += [h for q in list(handoff._backlog.values()) for h, _ in list(q)]
            if runner is not None:  # waiting for an async slot
                doomed += [h for h, _ in list(runner._waiting)]
            for h in doomed:
                h._complete(_CANCELLED, CancelledError(f"task {h.task_id} {why}"))
        finally:
            if self._durable is not None:  # new connections, threads and owner id
                self._durable = self._durable.after_fork()
                self.submit = self._durable.submit  # type: ignore[method-assign,assignment]
            if not self._shut_down:
                self._restart_after_fork()

    def _restart_after_fork(self) -> None:
        try:
            self._start_threads()
        except BaseException as exc:
            self._shut_down = True
            self._close()
            self._accept_timed = False
            _core.report_unraisable(
                exc, f"restarting engine {self.name} in a fork() child (it is closed there)"
            )

    def _join_workers(self, deadline: float | None) -> bool:
        # workers abandoned after a time limit are not waited for: their task
        # already ended (TaskTimeout) and the thread exits whenever it returns
        return bool(self._wait_workers_exit(_remaining(deadline)))

    @property
    def closed(self) -> bool:
        return self._shut_down

    def _check_open(self) -> None:
        if self._shut_down:
            raise EngineClosed(f"engine {self.name} is shut down; create a new Engine")

    def install_signal_handlers(
        self,
        timeout: float = 30.0,
        signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT),
    ) -> None:
        """Turn SIGTERM/SIGINT into a graceful drain (at most `timeout` s), then exit.

        Call from the main thread.  After draining, the previous handler runs; with
        none, SIGINT raises KeyboardInterrupt and SIGTERM exits with status 143.  The
        handler never blocks on the engine's locks: if the signal interrupts the main
        thread inside the engine, the drain runs on a helper thread and the handler
        runs again (and exits) when it is done.
        """
        check_nonneg_number(timeout, "timeout")
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("install_signal_handlers() must be called from the main thread")
        signals = check_signals(signals, "signals")  # all of them, before installing any
        for sig in signals:
            previous = signal.getsignal(sig)
            signal.signal(sig, _lifecycle.SignalDrain(self, timeout, previous))

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown(wait=True)


def _sweep(ref: weakref.ref[Engine]) -> None:
    engine = ref()
    if engine is not None:
        engine._sweep_results_now()


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


def _backoff(options: TaskOptions, attempt: int) -> float:
    """Exponential back-off: base * 2**(attempt-1), capped, with 'equal jitter'."""
    # the exponent is capped: 2.0 ** 1024 raises OverflowError (retries=2000)
    delay = min(options.retry_backoff * 2.0 ** min(attempt - 1, 1000), options.retry_backoff_max)
    if options.retry_jitter and delay > 0:
        import random  # on the first retry, not at `import cytask`

        delay = delay / 2 + random.uniform(0, delay / 2)
    return delay


def _is_async_fn(fn: object) -> bool:
    import inspect  # only on the event loop thread: `import cytask` does not load it

    return inspect.iscoroutinefunction(fn)
