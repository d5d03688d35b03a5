"""Recurring tasks: ``Engine.every(interval, fn)`` and ``Engine.cron(expr, fn)``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cytask._cron import CronExpression
from cytask._task import Task

if TYPE_CHECKING:
    from cytask._core import TaskHandle
    from cytask._engine import Engine

__all__ = ["Periodic"]


class Periodic:
    """A recurring submission.  Each firing submits one ordinary task.

    Interval schedules do not drift: the n-th run is due at ``start + n * interval``;
    runs missed while the process was busy are skipped, not piled up.
    """

    def __init__(
        self,
        engine: Engine,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        priority: int,
        *,
        interval: float | None = None,
        cron: CronExpression | None = None,
    ) -> None:
        self._engine = engine
        self._fn = fn
        self._args = args
        self._kwargs = kwargs
        self._priority = priority
        self.interval = interval
        self.cron = cron
        self.runs = 0
        self.last_handle: TaskHandle[Any] | None = None
        self._cancelled = threading.Event()
        self._next_due = time.monotonic()

    def __repr__(self) -> str:
        what = f"every {self.interval} s" if self.cron is None else self.cron.expression
        state = "cancelled" if self.cancelled else f"runs={self.runs}"
        return f"<Periodic {getattr(self._fn, '__qualname__', self._fn)!r} {what} {state}>"

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop future runs; a run already submitted is left to finish."""
        self._cancelled.set()

    def _schedule_next(self) -> None:
        if self.cron is not None:
            # absolute times: the next run is found in the schedule's zone (DST rules
            # included), then turned into a monotonic deadline
            wall_now, mono_now = time.time(), time.monotonic()
            self._next_due = mono_now + (self.cron.next_timestamp(wall_now) - wall_now)
        else:
            assert self.interval is not None
            now = time.monotonic()
            self._next_due += self.interval
            if self._next_due <= now:  # skip runs missed while busy
                missed = int((now - self._next_due) // self.interval) + 1
                self._next_due += missed * self.interval
        self._engine._timer_call_at(self._next_due, self._fire)

    def _fire(self) -> None:
        if self.cancelled or self._engine.closed:
            return
        if isinstance(self._fn, Task):  # keep the task's retries, time limit, compilation
            self.last_handle = self._engine._submit_task(
                self._fn, self._args, self._kwargs, self._priority, None
            )
        else:
            self.last_handle = self._engine._dispatch(
                self._fn, self._args, self._kwargs, self._priority, None, None
            )
        self.runs += 1
        self._schedule_next()
