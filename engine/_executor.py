"""``Engine.as_executor()``: a ``concurrent.futures.Executor`` backed by the engine."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from cytask._errors import EngineClosed

if TYPE_CHECKING:
    from cytask._core import TaskHandle
    from cytask._engine import Engine

__all__ = ["EngineExecutor"]

T = TypeVar("T")


class EngineExecutor(concurrent.futures.Executor):
    """Real ``Future`` objects, so ``asyncio``'s ``run_in_executor``,
    ``concurrent.futures.wait`` and ``as_completed`` work unchanged.

    ``shutdown()`` stops this view from taking work and waits for what it
    submitted; the engine itself keeps running.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._closed = False
        self._outstanding: set[concurrent.futures.Future[Any]] = set()

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._closed:
                raise EngineClosed("this executor was shut down")
            fut: concurrent.futures.Future[T] = concurrent.futures.Future()
            self._outstanding.add(fut)

        def run() -> T:
            # The Future is RUNNING from the moment a worker starts the task, as with
            # ThreadPoolExecutor: from then on fut.cancel() returns False.
            if not fut.set_running_or_notify_cancel():
                raise concurrent.futures.CancelledError("cancelled as it started")
            return fn(*args, **kwargs)

        try:
            handle = self._engine.submit(run)
        except BaseException:
            with self._lock:  # never submitted: shutdown(wait=True) must not wait for it
                self._outstanding.discard(fut)
            raise
        fut.add_done_callback(lambda f: handle.cancel() if f.cancelled() else None)
        handle.add_done_callback(lambda h: self._transfer(h, fut))
        return fut

    def _transfer(self, handle: TaskHandle[Any], fut: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._outstanding.discard(fut)
        if handle.attempts == 0:
            # never started (cancelled, engine shut down, queue full): `run` did not
            # touch the Future; move it on here (this also wakes cf.wait/as_completed)
            if handle.cancelled():
                fut.cancel()
            if not fut.set_running_or_notify_cancel():
                return
        elif fut.cancelled():
            return  # cancelled just as it started: `run` already notified the waiters
        exc = handle.exception(timeout=0)
        if exc is None:
            fut.set_result(handle.result(timeout=0))
        else:
            fut.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            pending = list(self._outstanding)
        if cancel_futures:
            for fut in pending:
                fut.cancel()
        if wait:
            concurrent.futures.wait(pending)
