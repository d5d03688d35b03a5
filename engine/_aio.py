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
import contextvars
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cytask._core import TaskHandle
    from cytask._engine import Engine

__all__ = ["AsyncRunner", "await_handle", "current_async_handle"]

_current: contextvars.ContextVar[TaskHandle[Any] | None] = contextvars.ContextVar(
    "cytask_current_task", default=None
)

_SUCCEEDED = 4
_FAILED = 5
_RUNNING = 2


# the runner whose loop runs the current async task (None elsewhere)
_current_runner: contextvars.ContextVar[AsyncRunner | None] = contextvars.ContextVar(
    "cytask_current_runner", default=None
)


def current_async_handle() -> TaskHandle[Any] | None:
    return _current.get()


class AsyncRunner:
    """The engine's event loop thread."""

    def __init__(self, engine: Engine, concurrency: int) -> None:
        self._engine = engine
        self._concurrency = concurrency
        self._waiting: collections.deque[tuple[TaskHandle[Any], Coroutine[Any, Any, Any]]] = (
            collections.deque()
        )
        self._running: dict[int, asyncio.Task[Any]] = {}
        self._lock = threading.Lock()
        self._drain_scheduled = False
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run_loop, args=(ready,), name=f"{engine.name}-asyncio", daemon=True
        )
        self._thread.start()
        ready.wait()

    def _run_loop(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(ready.set)
        self._loop.run_forever()
        self._loop.close()

    @property
    def active(self) -> int:
        return len(self._running)

    def submit(self, handle: TaskHandle[Any], coro: Coroutine[Any, Any, Any]) -> None:
        """From any thread: queue the coroutine; wake the loop once per batch."""
        with self._lock:
            self._waiting.append((handle, coro))
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
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
                self._engine._async_ids.discard(handle.task_id)
                continue
            ctx = contextvars.copy_context()
            ctx.run(_current.set, handle)
            ctx.run(_current_runner.set, self)
            task = self._loop.create_task(self._run(handle, coro), context=ctx)
            self._running[handle.task_id] = task

    async def _run(self, handle: TaskHandle[Any], coro: Coroutine[Any, Any, Any]) -> None:
        options = handle.options
        try:
            if options is not None and options.timeout > 0:
                value = await asyncio.wait_for(coro, options.timeout)
            else:
                value = await coro
        except asyncio.CancelledError:
            from cytask._errors import CancelledError

            self._engine._async_ids.discard(handle.task_id)
            handle._complete(6, CancelledError(f"task {handle.task_id} was cancelled"))
        except TimeoutError as exc:
            if options is not None and options.timeout > 0 and not handle.done():
                from cytask._errors import TaskTimeout

                err = TaskTimeout(
                    f"task {handle.task_id} exceeded its time limit of {options.timeout} s"
                )
                err.__cause__ = exc
                self._engine._async_failed(handle, err)
            else:
                self._engine._async_failed(handle, exc)
        except BaseException as exc:
            self._engine._async_failed(handle, exc)
        else:
            # the failure paths discard the id in Engine._async_failed (before a retry
            # may add it again); these two must too, or the set grows with every task
            self._engine._async_ids.discard(handle.task_id)
            handle._complete(_SUCCEEDED, value, _RUNNING)
        finally:
            self._running.pop(handle.task_id, None)
            self._start_waiting()

    def cancel(self, handle: TaskHandle[Any]) -> None:
        """Cancel a running async task (from any thread)."""
        self._loop.call_soon_threadsafe(self._cancel_in_loop, handle.task_id)

    def _cancel_in_loop(self, task_id: int) -> None:
        task = self._running.get(task_id)
        if task is not None:
            task.cancel()

    def stop(self, timeout: float | None) -> None:
        """Let running coroutines finish (up to `timeout`), then stop the loop."""
        done = threading.Event()

        async def wait_all() -> None:
            while self._running or self._waiting:
                tasks = list(self._running.values())
                if tasks:
                    await asyncio.wait(tasks)
                else:
                    await asyncio.sleep(0)

        def start() -> None:
            fut = asyncio.ensure_future(wait_all())
            fut.add_done_callback(lambda _: done.set())

        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(start)
            if not done.wait(timeout):
                for task_id in list(self._running):
                    self._loop.call_soon_threadsafe(self._cancel_in_loop, task_id)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)


async def await_handle(handle: TaskHandle[Any]) -> Any:
    """Wait for a handle from inside any running event loop."""
    if not handle.done():
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def wake(_: TaskHandle[Any]) -> None:
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
