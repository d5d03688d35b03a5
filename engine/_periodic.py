"""Recurring tasks: ``Engine.every(interval, fn)`` and ``Engine.cron(expr, fn)``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cytask._core import report_unraisable
from cytask._cron import CronExpression
from cytask._task import Task
from cytask._timer import TimerHandle

if TYPE_CHECKING:
    from cytask._core import TaskHandle
    from cytask._engine import Engine

__all__ = ["Periodic"]


class Periodic:
    """A recurring submission.  Each firing submits one ordinary task.

    Interval schedules do not drift: the n-th run is due at ``start + n * interval``;
    runs missed while the process was busy are skipped, not piled up.

    At most one run is in flight: a firing while the previous run has not finished
    (queued or running) is skipped and counted in ``skipped``, so a run slower than
    the interval never makes runs pile up.  A run that could not be queued (the
    level stayed full: ``QueueFull``) is counted in ``dropped``, its error kept in
    ``last_error`` and reported through ``sys.unraisablehook`` (the first of each
    streak); the schedule goes on.  The schedule only ends by ``cancel()`` or
    shutdown; should it ever stop for another reason, ``stopped_by`` says why.
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
        self.runs = 0  # runs submitted
        self.skipped = 0  # firings skipped because the previous run had not finished
        self.dropped = 0  # runs that could not be queued (QueueFull)
        self.last_error: BaseException | None = None  # why the last drop happened
        self.stopped_by: BaseException | None = None  # an error that ended the schedule
        self.last_handle: TaskHandle[Any] | None = None
        self._cancelled = threading.Event()
        self._next_due = time.monotonic()
        self._entry: TimerHandle | None = None  # the next firing on the engine's timer
        self._streak = False  # inside a run of drops: only the first one is reported
        self._tick = 0  # with a store: the due time in ms since the epoch, claimed once

    def __repr__(self) -> str:
        what = f"every {self.interval} s" if self.cron is None else self.cron.expression
        state = "cancelled" if self.cancelled else f"runs={self.runs}"
        return f"<Periodic {getattr(self._fn, '__qualname__', self._fn)!r} {what} {state}>"

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop future runs; a run already submitted is left to finish.  The schedule
        leaves the engine and its timer at once (it holds nothing afterwards)."""
        self._cancelled.set()
        entry = self._entry
        if entry is not None and isinstance(entry, TimerHandle):
            entry.cancel()
        self._engine._forget_periodic(self)

    def _schedule_next(self) -> None:
        durable = getattr(self._engine, "_durable", None)
        if durable is not None:  # every process of a store fires the same ticks (wall clock)
            self._next_due, self._tick = durable.next_tick(self)
        elif self.cron is not None:
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
        if self.cancelled:
            return
        self._entry = self._engine._timer_call_at(self._next_due, self._fire)
        if self.cancelled and self._entry is not None:  # cancel() raced with us
            self._entry.cancel()

    def _fire(self) -> None:
        """On the timer thread: submit one run (never waiting for queue space), then
        schedule the next, whatever happened to this one."""
        from cytask._errors import EngineClosed

        if self.cancelled or self._engine.closed:
            return
        try:
            self._submit_run()
        except EngineClosed:
            return  # shut down meanwhile: shutdown() cancels the schedule
        except BaseException as exc:  # the schedule goes on; say what went wrong
            self._drop(exc)
        try:
            self._schedule_next()
        except BaseException as exc:
            self.stopped_by = exc
            report_unraisable(exc, f"{self!r}: the schedule stopped")

    def _submit_run(self) -> None:
        from cytask._errors import QueueFull

        durable = getattr(self._engine, "_durable", None)
        if durable is not None and not durable.claim_tick(self, self._tick):
            return  # another process of the store runs this tick
        last = self.last_handle
        if last is not None and not last.done():
            self.skipped += 1  # the previous run is still queued or running
            return
        if isinstance(self._fn, Task):  # keep the task's retries, time limit, compilation
            h = self._engine._submit_task(
                self._fn, self._args, self._kwargs, self._priority, None, from_timer=True
            )
        else:
            h = self._engine._dispatch(
                self._fn, self._args, self._kwargs, self._priority, None, None, from_timer=True
            )
        self.last_handle = h
        self.runs += 1
        if h.done() and not h.cancelled():
            err = h.exception(timeout=0)
            if isinstance(err, QueueFull):  # the level was full: the handle failed
                self._drop(err)
                return
        self._streak = False

    def _drop(self, exc: BaseException) -> None:
        self.dropped += 1
        self.last_error = exc
        if not self._streak:
            self._streak = True
            report_unraisable(
                exc,
                f"{self!r}: a run could not be queued (counted in Periodic.dropped; "
                f"the schedule goes on)",
            )
