"""Async tasks and awaiting handles.

``async def`` tasks run on one event loop thread owned by the engine, at most
``async_concurrency`` at a time; the rest wait in FIFO order.  A worker calls the
task function (which only builds the coroutine) and hands the coroutine over; the
handle stays RUNNING until the coroutine finishes.

Handles can be awaited from any event loop: ``await handle``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import threading
import time
import weakref
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from cytask._context import current_async as _current

if TYPE_CHECKING:
    from cytask._core import TaskHandle
    from cytask._engine import Engine

__all__ = ["AsyncRunner", "await_handle", "current_async_handle"]

_SUCCEEDED = 4
_FAILED = 5
_RUNNING = 2

# waits longer than this are waits without a limit (threading.TIMEOUT_MAX is ~292 years)
_MAX_WAIT = 1e9
# how long tasks cancelled by a shutdown get to run their cleanup
_GRACE = 1.0


# the runner whose loop runs the current async task (None elsewhere)
_current_runner: contextvars.ContextVar[AsyncRunner | None] = contextvars.ContextVar(
    "cytask_current_runner", default=None
)


def current_async_handle() -> TaskHandle[Any] | None:
    return _current.get()


class AsyncRunner:
    """The engine's event loop thread.

    The loop thread survives anything a task lets escape (an exception raised out
    of a callback is reported through ``sys.unraisablehook`` and the loop runs on).
    A time limit is enforced inside the task's own asyncio task (no nested task),
    so a coroutine that raises ``SystemExit``/``KeyboardInterrupt`` fails its
    handle instead of stopping the loop, and one that raises its own
    ``TimeoutError`` fails with it (and is retried per ``retry_on``), while only
    the limit itself gives ``TaskTimeout``.
    """

    def __init__(self, engine: Engine, concurrency: int) -> None:
        # weakly: a dropped engine is collected (Engine._orphaned).  A coroutine in
        # flight holds its handle, which holds the engine, so it is there when needed
        self._engine = weakref.ref(engine)
        self._ids = engine._async_ids  # the engine's ids of its async tasks in flight
        self._name = engine.name
        self._concurrency = concurrency
        self._waiting: collections.deque[tuple[TaskHandle[Any], Coroutine[Any, Any, Any]]] = (
            collections.deque()
        )
        # task_id -> (its asyncio task, its handle): loop thread writes, others snapshot
        self._running: dict[int, tuple[asyncio.Task[Any], TaskHandle[Any]]] = {}
        self._cancel_reason: dict[int, str] = {}  # task_id -> why stop() cancelled it
        self._lock = threading.Lock()
        self._drain_scheduled = False
        self._closed = False  # under _lock: the loop is stopping; submit() refuses
        self._stop_started = False  # loop thread only
        # the events of later stop() calls, set with the first one's (loop thread only);
        # a task for each, created on a loop about to close, was never awaited
        self._also_finished: list[threading.Event] = []
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run_loop, args=(ready,), name=f"{engine.name}-asyncio", daemon=True
        )
        self._thread.start()
        ready.wait()

    def _run_loop(self, ready: threading.Event) -> None:
        from cytask._core import report_unraisable

        asyncio.set_event_loop(self._loop)
        engine = self._engine()  # alive: the engine that starts the runner waits for ready
        if engine is not None:
            engine._own_thread()  # async tasks are the engine's work, not the application's
        engine = None
        self._loop.call_soon(ready.set)
        while True:
            try:
                self._loop.run_forever()
            except BaseException as exc:  # escaped a callback: the loop must go on
                report_unraisable(exc, f"the event loop of {self._name}")
                continue
            if self._closed:
                break
        self._end_leftovers("cancelled: its engine shut down before it finished")
        self._loop.close()

    @property
    def active(self) -> int:
        return len(self._running)

    def submit(self, handle: TaskHandle[Any], coro: Coroutine[Any, Any, Any]) -> None:
        """From any thread: queue the coroutine; wake the loop once per batch."""
        with self._lock:
            if self._closed:
                raise RuntimeError(
                    f"task {handle.task_id}: the engine's event loop has stopped (shut down)"
                )
            self._waiting.append((handle, coro))
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        with contextlib.suppress(RuntimeError):  # closed meanwhile: the loop ended it
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            self._drain_scheduled = False
        self._start_waiting()

    def _start_waiting(self) -> None:
        while len(self._running) < self._concurrency:
            with self._lock:
                if not self._waiting:
                    return
                handle, coro = self._waiting.popleft()
            if handle.done():  # cancelled or timed out while waiting for a slot
                coro.close()
                self._ids.discard(handle.task_id)
                continue
            ctx = contextvars.copy_context()
            ctx.run(_current.set, handle)
            ctx.run(_current_runner.set, self)
            task = self._loop.create_task(self._run(handle, coro), context=ctx)
            self._running[handle.task_id] = (task, handle)

    async def _run(self, handle: TaskHandle[Any], coro: Coroutine[Any, Any, Any]) -> None:
        options = handle.options
        limit = options.timeout if options is not None else 0.0
        expired = False
        timer: asyncio.TimerHandle | None = None
        if limit > 0:
            task = asyncio.current_task()
            assert task is not None

            def expire() -> None:
                nonlocal expired
                expired = True
                handle._request_cancel()
                task.cancel()

            timer = self._loop.call_later(min(limit, _MAX_WAIT), expire)
        try:
            value = await coro
        except BaseException as exc:
            if timer is not None:
                timer.cancel()
            if expired:
                self._failed(handle, self._timeout_error(handle, limit, exc), True)
            elif isinstance(exc, asyncio.CancelledError):
                from cytask._errors import CancelledError

                self._ids.discard(handle.task_id)
                why = self._cancel_reason.get(handle.task_id, "was cancelled")
                handle._complete(6, CancelledError(f"task {handle.task_id} {why}"))
            else:
                self._failed(handle, exc)
        else:
            if timer is not None:
                timer.cancel()
            if expired:  # it swallowed the cancellation: a late result is discarded
                self._failed(handle, self._timeout_error(handle, limit, None), True)
            else:
                # the failure paths discard the id in Engine._async_failed (before a retry
                # may add it again); this one must too, or the set grows with every task
                self._ids.discard(handle.task_id)
                handle._complete(_SUCCEEDED, value, _RUNNING)
        finally:
            self._running.pop(handle.task_id, None)
            self._start_waiting()

    def _failed(self, handle: TaskHandle[Any], exc: BaseException, limit: bool = False) -> None:
        """Engine._async_failed: retry or fail.  The engine is alive (the handle of a
        task in flight holds it); were it not, the task fails without a retry."""
        engine = self._engine()
        if engine is not None:
            engine._async_failed(handle, exc, limit)
        else:
            self._ids.discard(handle.task_id)
            handle._complete(_FAILED, exc, _RUNNING)

    @staticmethod
    def _timeout_error(
        handle: TaskHandle[Any], limit: float, cause: BaseException | None
    ) -> BaseException:
        from cytask._errors import TaskTimeout

        err = TaskTimeout(
            f"task {handle.task_id} ({handle.name}) exceeded its time limit of {limit} s"
        )
        if cause is not None and not isinstance(cause, asyncio.CancelledError):
            err.__cause__ = cause
        return err

    def cancel(self, handle: TaskHandle[Any]) -> None:
        """Cancel a running async task (from any thread)."""
        self._loop.call_soon_threadsafe(self._cancel_in_loop, handle.task_id)

    def _cancel_in_loop(self, task_id: int) -> None:
        entry = self._running.get(task_id)
        if entry is not None:
            entry[0].cancel()

    def stop(self, timeout: float | None) -> None:
        """Let running and waiting coroutines finish (up to `timeout`), cancel the
        rest, then stop the loop; every handle ends.

        Called on the loop thread itself (``shutdown()`` inside an async task), it
        cannot wait for the tasks (the caller is one of them): it starts the same
        sequence on the loop and returns.
        """
        finished = threading.Event()
        try:
            self._loop.call_soon_threadsafe(self._begin_stop, timeout, finished)
        except RuntimeError:  # the loop is closed: its thread ended everything
            return
        if threading.current_thread() is self._thread:
            return
        limit = None if timeout is None or timeout >= _MAX_WAIT else timeout + _GRACE * 2
        deadline = None if limit is None else time.monotonic() + limit
        # in slices: a loop thread that is gone (it ended everything) sets nothing
        while not finished.wait(0.1) and self._thread.is_alive():
            if deadline is not None and time.monotonic() >= deadline:
                # the loop itself is blocked (a coroutine that never awaits): end the
                # handles from here; the loop thread stops once it gets control back
                self._end_leftovers("cancelled: Engine.shutdown() timed out while it ran")
                break
        self._thread.join(_GRACE)

    def _begin_stop(self, timeout: float | None, finished: threading.Event) -> None:
        if self._stop_started:  # a second stop (shutdown again): told by the first
            if self._closed:
                finished.set()
            else:
                self._also_finished.append(finished)
            return
        self._stop_started = True
        self._loop.create_task(self._stop_when_done(timeout, finished))

    async def _stop_when_done(self, timeout: float | None, finished: threading.Event) -> None:
        loop = self._loop
        deadline = None if timeout is None or timeout >= _MAX_WAIT else loop.time() + timeout
        me = asyncio.current_task()
        while True:
            tasks = [t for t, _ in self._running.values() if t is not me]
            if not tasks and not self._waiting:
                break
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                break
            if tasks:
                await asyncio.wait(tasks, timeout=left)
            else:
                await asyncio.sleep(0)  # a drain of the waiting ones is scheduled
        why = "cancelled: Engine.shutdown() timed out while it ran"
        with self._lock:
            self._closed = True
            waiting = list(self._waiting)
            self._waiting.clear()
        for handle, coro in waiting:
            self._end(handle, coro, "cancelled: Engine.shutdown() timed out before it started")
        tasks = [t for t, _ in self._running.values() if t is not me]
        if tasks:
            self._cancel_reason.update(dict.fromkeys(self._running, why))
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks, timeout=_GRACE)
        self._end_leftovers(why)  # those that ignored the cancellation
        loop.stop()
        finished.set()  # now: a done-callback would never run on a stopping loop
        for other in self._also_finished:
            other.set()

    def _end(
        self, handle: TaskHandle[Any], coro: Coroutine[Any, Any, Any] | None, why: str
    ) -> None:
        from cytask._errors import CancelledError

        if coro is not None:
            coro.close()
        self._ids.discard(handle.task_id)
        handle._complete(6, CancelledError(f"task {handle.task_id} {why}"))

    def _end_leftovers(self, why: str) -> None:
        """Cancel every handle this runner still holds (any thread; idempotent)."""
        with self._lock:
            self._closed = True
            waiting = list(self._waiting)
            self._waiting.clear()
        for handle, coro in waiting:
            self._end(handle, coro, why)
        for _, handle in list(self._running.values()):
            self._end(handle, None, why)


async def await_handle(handle: TaskHandle[Any]) -> Any:
    """Wait for a handle from inside any running event loop."""
    if not handle.done():
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def wake(_: TaskHandle[Any]) -> None:
            # the loop may have closed meanwhile (an await cancelled when its request
            # was, then the loop's end): nobody waits for this any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, fut)

        handle.add_done_callback(wake)
        runner = _current_runner.get()
        if runner is not None and runner._loop is loop:
            # an async task awaiting another task holds its concurrency slot while it
            # waits; lend one so a child waiting for a slot can run (no deadlock even
            # with async_concurrency=1)
            runner._concurrency += 1
            runner._start_waiting()
            try:
                await fut
            finally:
                runner._concurrency -= 1
        else:
            await fut
    return handle.result(timeout=0)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
