"""``Engine``: the in-process task engine users create, built on the native core."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from cytask import _core
from cytask._enums import Priority
from cytask._errors import EngineClosed
from cytask._stats import EngineStats, StatsSampler
from cytask._validate import check_callable, check_int, check_nonneg_number, check_priority

__all__ = ["Engine"]

R = TypeVar("R")

_DEFAULT_QUEUE_SIZE = 65536
_DEFAULT_MAX_RESULTS = 100_000


class Engine(_core.Core):
    """A pool of native worker threads fed by four lock-free priority queues.

    ``workers`` threads start at once and stay.  Python tasks run on them with the
    GIL taken once per batch; native (compiled) tasks run with no GIL.  Every task
    you submit ends in a terminal state its handle reports: succeeded, failed or
    cancelled, also when the engine shuts down or a queue overflows.

    ``queue_size`` bounds each priority level; a submit to a full level waits up to
    ``submit_timeout`` seconds (None: as long as it takes) and then raises
    ``QueueFull``.  ``max_results`` bounds how many recent handles ``get()`` can find.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        queue_size: int = _DEFAULT_QUEUE_SIZE,
        submit_timeout: float | None = None,
        max_results: int = _DEFAULT_MAX_RESULTS,
        name: str | None = None,
    ) -> None:
        if workers is None:
            workers = os.cpu_count() or 2
        check_int(workers, "workers", minimum=1)
        check_int(queue_size, "queue_size", minimum=2)
        check_nonneg_number(submit_timeout, "submit_timeout", allow_none=True)
        check_int(max_results, "max_results", minimum=0)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Expected str or None for name, got {type(name).__name__}")
        self._init_core(queue_size, submit_timeout, max_results, workers, 30.0)
        self.name = name or f"cytask-{id(self):x}"
        self.workers = workers
        self._shutdown_lock = threading.Lock()
        self._shut_down = False
        self._sampler = StatsSampler()
        for _ in range(workers):
            self._spawn_worker()

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
        **kwargs: Any,
    ) -> _core.TaskHandle:
        """Run ``fn(*args, **kwargs)`` at ``priority`` (Catzilla's name for submit)."""
        check_callable(fn, "fn")
        check_priority(priority)
        return self._submit_handle(fn, args, kwargs, int(priority), None, False)

    # -- observing -------------------------------------------------------------

    def stats(self) -> EngineStats:
        """A snapshot of queue depths, workers, throughput and latencies."""
        return EngineStats.from_core(self._core_stats(), self, self._sampler)

    # -- shutdown --------------------------------------------------------------

    def shutdown(
        self, wait: bool = True, timeout: float | None = None, cancel_pending: bool = False
    ) -> None:
        """Stop taking tasks, then finish what is queued (or cancel it).

        ``wait=True`` blocks until the workers have drained the queues and exited,
        at most ``timeout`` seconds; tasks still queued after that are cancelled, so
        every handle ends in a terminal state.  ``cancel_pending=True`` cancels
        queued tasks at once instead of running them.  Calling it twice is harmless.
        """
        check_nonneg_number(timeout, "timeout", allow_none=True)
        with self._shutdown_lock:
            first = not self._shut_down
            self._shut_down = True
            self._close()
        if cancel_pending:
            self._cancel_queued("cancelled by Engine.shutdown(cancel_pending=True)")
        if first:
            self._stop_workers()
        if not wait:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        current = threading.current_thread()
        for t in list(self._threads):
            if t is current:
                continue
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if self._queued():
            self._cancel_queued("cancelled: Engine.shutdown() timed out before it ran")

    @property
    def closed(self) -> bool:
        return self._shut_down

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown(wait=True)

    def _check_open(self) -> None:
        if self._shut_down:
            raise EngineClosed(f"engine {self.name} is shut down; create a new Engine")
