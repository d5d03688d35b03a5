"""One timer thread per engine: delays, retry back-off, time limits, periodic runs.

A heap of deadlines (``time.monotonic()``) and a condition variable: the thread
sleeps until the earliest deadline or until an earlier one is added, so an idle
timer costs nothing and a deadline fires within about a millisecond.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from cytask._core import report_unraisable

__all__ = ["Timer"]


class Timer:
    """Runs ``action(*args)`` on its own thread at (or just after) each deadline."""

    def __init__(self, name: str) -> None:
        self._heap: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"{name}-timer", daemon=True)
        self._thread.start()

    def call_at(self, deadline: float, action: Callable[..., Any], *args: Any) -> None:
        with self._cond:
            if self._stopped:
                raise RuntimeError("timer stopped")
            entry = (deadline, next(self._seq), action, args)
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                self._cond.notify()

    def call_later(self, delay: float, action: Callable[..., Any], *args: Any) -> None:
        self.call_at(time.monotonic() + delay, action, *args)

    def pending(self) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
        """A snapshot of what is waiting (for stats and shutdown)."""
        with self._cond:
            return [(action, args) for _, _, action, args in self._heap]

    def stop(self) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
        """Stop the thread; returns the entries that never fired."""
        with self._cond:
            self._stopped = True
            left = [(action, args) for _, _, action, args in sorted(self._heap)]
            self._heap.clear()
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        return left

    def _run(self) -> None:
        cond = self._cond
        heap = self._heap
        while True:
            with cond:
                while not self._stopped:
                    if heap:
                        wait = heap[0][0] - time.monotonic()
                        if wait <= 0:
                            break
                        cond.wait(wait)
                    else:
                        cond.wait()
                if self._stopped:
                    return
                _, _, action, args = heapq.heappop(heap)
            try:
                action(*args)
            except BaseException as exc:  # a timer action must never kill the timer
                report_unraisable(exc, f"cytask timer action {action!r}")
