"""One timer thread per engine: delays, retry back-off, time limits, periodic runs.

A heap of deadlines (``time.monotonic()``) and a condition variable: the thread
sleeps until the earliest deadline or until an earlier one is added, so an idle
timer costs nothing and a deadline fires within about a millisecond.

Cancelling an entry is O(1) and lazy, as in asyncio: the entry drops its action
and arguments at once (so what it referred to can be freed), stays in the heap
as a tombstone, and is skipped when it reaches the top.  When tombstones are
more than half of a heap of at least 100 entries, the heap is rebuilt without
them, so a million finished time limits cost nothing after they finish.

The timer never blocks on anything but its own condition: its actions must not
wait (the engine pushes due tasks without waiting for queue space, see
``HandOff``), and any wait is cut into slices no longer than ``MAX_SLICE`` so a
deadline years away (``delay=1e10``) cannot overflow the wait.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cytask._core import report_unraisable

if TYPE_CHECKING:
    from cytask._core import TaskHandle
    from cytask._engine import Engine

__all__ = ["HandOff", "Timer", "TimerHandle"]

# the longest single wait: far below threading.TIMEOUT_MAX, and short enough that
# a clock that jumps (suspend) is looked at again soon
MAX_SLICE = 3600.0
# compact when tombstones are more than this many and more than half the heap
_COMPACT_MIN = 100


class TimerHandle:
    """One scheduled call; ``cancel()`` it to drop it (and what it refers to) at once."""

    __slots__ = ("_call", "_timer", "when")

    def __init__(
        self, timer: Timer, when: float, action: Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        self._timer: Timer | None = timer  # None once fired or cancelled
        self.when = when
        # (action, args) in one field: the timer thread reads it with one load, so a
        # racing cancel() cannot leave it an action without its arguments
        self._call: tuple[Callable[..., Any], tuple[Any, ...]] | None = (action, args)

    def __repr__(self) -> str:
        state = "pending" if self._timer is not None else "done"
        action = self._call[0] if self._call is not None else None
        return f"<TimerHandle {action!r} at {self.when:.3f} {state}>"

    @property
    def pending(self) -> bool:
        """True until the call ran or was cancelled."""
        return self._timer is not None

    def cancel(self) -> bool:
        """Drop the call if it has not run; True if this cancelled it.

        Lock-free (a worker cancels the time limit of every attempt that returns):
        the fields are single-word stores under the GIL.  Racing the timer thread
        is harmless: it pops the entry and clears ``_timer`` before it reads the
        action, and skips an action found cleared.  The tombstone count may be off
        by a racing update; it only decides when to compact.
        """
        timer = self._timer
        if timer is None:
            return False
        self._timer = None
        self._call = None
        timer._cancelled += 1
        if timer._cancelled > _COMPACT_MIN and timer._cancelled * 2 > len(timer._heap):
            timer._compact()
        return True


class Timer:
    """Runs ``action(*args)`` on its own thread at (or just after) each deadline."""

    def __init__(self, name: str) -> None:
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()  # guards _heap; `with` on it directly is cheapest
        self._cond = threading.Condition(self._lock)
        self._stopped = False
        self._cancelled = 0  # about how many tombstones the heap holds
        self._owner: weakref.ref[object] | None = None  # see stop_with
        self._thread = threading.Thread(target=self._run, name=f"{name}-timer", daemon=True)
        self._thread.start()

    def stop_with(self, owner: object) -> None:
        """Stop (without joining) once `owner` is gone, if nothing stopped it before
        (an engine collected without its shutdown: a subclass's ``__del__``)."""
        self._owner = weakref.ref(owner, self._owner_gone)

    def _owner_gone(self, _: weakref.ref[object]) -> None:
        self.stop(join=False)

    def __len__(self) -> int:
        """Live (not cancelled) entries; O(n), for tests and debugging."""
        with self._lock:
            return sum(1 for e in self._heap if e[2]._timer is not None)

    def call_at(self, deadline: float, action: Callable[..., Any], *args: Any) -> TimerHandle:
        th = TimerHandle(self, deadline, action, args)
        entry = (deadline, next(self._seq), th)
        with self._lock:
            if self._stopped:
                th._timer = None
                raise RuntimeError("timer stopped")
            heap = self._heap
            heapq.heappush(heap, entry)
            if heap[0] is entry:
                self._cond.notify()
        return th

    def call_later(self, delay: float, action: Callable[..., Any], *args: Any) -> TimerHandle:
        return self.call_at(time.monotonic() + delay, action, *args)

    def _compact(self) -> None:
        """Rebuild the heap without tombstones (amortised O(1) per cancel)."""
        with self._lock:
            heap = self._heap
            heap[:] = [e for e in heap if e[2]._timer is not None]
            heapq.heapify(heap)
            self._cancelled = 0

    def pending(self) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
        """A snapshot of what is waiting (tests and debugging; O(n) under the lock)."""
        with self._lock:
            return [e[2]._call for e in self._heap if e[2]._call is not None]

    def stop(self, join: bool = True) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
        """Stop the thread; returns the entries that never fired (deadline order).

        ``join=False`` only tells the thread to end (it does at once).
        """
        left: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        with self._lock:
            self._stopped = True
            for _, _, th in sorted(self._heap):
                call = th._call
                th._timer = None
                th._call = None
                if call is not None:
                    left.append(call)
            self._heap.clear()
            self._cancelled = 0
            self._cond.notify()
        if join and threading.current_thread() is not self._thread:
            self._thread.join()
        return left

    @property
    def stopped(self) -> bool:
        return self._stopped

    def _next_due(self) -> TimerHandle | None:
        """Under the lock: wait for the earliest live entry to come due; None once stopped."""
        cond = self._cond
        heap = self._heap
        while not self._stopped:
            while heap and heap[0][2]._timer is None:  # a tombstone on top: drop it
                heapq.heappop(heap)
                if self._cancelled > 0:
                    self._cancelled -= 1
            if not heap:
                cond.wait()
                continue
            wait = heap[0][0] - time.monotonic()
            if wait <= 0:
                th = heapq.heappop(heap)[2]
                th._timer = None  # fired: cancel() is now a no-op
                return th
            cond.wait(min(wait, MAX_SLICE))
        return None

    def _run(self) -> None:
        while True:
            action: Callable[..., Any] | None = None
            try:
                with self._lock:
                    th = self._next_due()
                if th is None:
                    return
                call = th._call  # one load (see TimerHandle._call)
                th._call = None
                if call is not None:  # None: cancelled just as it came due
                    action = call[0]
                    action(*call[1])
            except BaseException as exc:  # nothing may kill the timer
                where = f"action {action!r}" if action is not None else self._thread.name
                report_unraisable(exc, f"cytask timer {where}")
            # not kept while the timer waits for the next entry: a bound method here
            # would keep its engine (and its arguments, a handle) alive until then
            th = call = action = None


class HandOff:
    """Pushes due tasks whose priority level was full when the timer tried them.

    The timer must never wait for queue space (it would stop every time limit,
    delay, retry and periodic run).  It pushes without waiting; when the level is
    full the handle, already PENDING, comes here.  One thread per level, started
    on first use and gone when its backlog is empty, pushes each handle in FIFO
    order with the engine's ordinary backpressure: it waits for space (woken by the
    pop that frees it) up to ``submit_timeout``, then fails the handle with
    ``QueueFull``.  A handle cancelled meanwhile (``cancel()``, shutdown) is
    dropped within ``_SLICE`` s.  So every due task still ends in a terminal state
    its handle reports.
    """

    _SLICE = 0.1  # longest wait for space before looking for cancellation again

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._backlog: dict[int, collections.deque[tuple[TaskHandle[Any], float]]] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._idle = threading.Condition(self._lock)

    def __len__(self) -> int:
        """Handles waiting here (the one being pushed included)."""
        with self._lock:
            return sum(len(q) for q in self._backlog.values())

    def put(self, h: TaskHandle[Any], level: int) -> None:
        """Queue a PENDING handle the timer could not push (from the timer thread)."""
        with self._lock:
            q = self._backlog.setdefault(level, collections.deque())
            q.append((h, time.monotonic()))
            if level in self._threads:
                return
            t = threading.Thread(
                target=self._drain,
                args=(level, q),
                name=f"{self._engine.name}-handoff-{level}",
                daemon=True,
            )
            self._threads[level] = t
        try:
            t.start()
        except BaseException as exc:  # no thread (the process is at its limit)
            from cytask._engine import _FAILED, _PENDING

            with self._lock:
                del self._threads[level]
                del self._backlog[level]
            for other, _ in q:  # the caller fails `h`; any that joined it fail alike
                if other is not h:
                    other._complete(_FAILED, exc, _PENDING)
            raise

    def _drain(self, level: int, q: collections.deque[tuple[TaskHandle[Any], float]]) -> None:
        while True:
            with self._lock:
                if not q:
                    del self._backlog[level]
                    del self._threads[level]
                    self._idle.notify_all()
                    return
                h, since = q[0]
            try:
                self._push(h, since)
            except BaseException as exc:
                report_unraisable(exc, f"cytask hand-off of task {h.task_id}")
            with self._lock:
                q.popleft()

    def _push(self, h: TaskHandle[Any], since: float) -> None:
        from cytask._engine import _FAILED, _PENDING
        from cytask._errors import QueueFull

        engine = self._engine
        limit = engine._submit_wait
        deadline = None if limit is None else since + limit
        while True:
            left = (
                self._SLICE if deadline is None else min(self._SLICE, deadline - time.monotonic())
            )
            if left <= 0:
                exc = QueueFull(
                    f"priority {h.priority.name} queue is full ({engine.queue_capacity} tasks) "
                    f"and stayed full for submit_timeout={limit} s after task {h.task_id} "
                    f"was due; raise queue_size or submit_timeout, or submit more slowly"
                )
                exc.handle = h
                h._complete(_FAILED, exc, _PENDING)
                return
            # waits (GIL released) for a pop to free a slot; None: still full
            if engine._enqueue_handle(h, _PENDING, left) is not None:
                return  # queued, or cancelled meanwhile

    def cancel_all(self, why: str) -> int:
        """Cancel every handle still waiting here (shutdown); returns how many."""
        from cytask._engine import _CANCELLED, _PENDING
        from cytask._errors import CancelledError

        with self._lock:
            waiting = [h for q in self._backlog.values() for h, _ in q]
        n = 0
        for h in waiting:
            if h._complete(_CANCELLED, CancelledError(f"task {h.task_id} {why}"), _PENDING):
                n += 1
        return n

    def join(self, timeout: float | None) -> bool:
        """Wait until the backlog is pushed (or failed, or cancelled); False on time-out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._threads:
                left = MAX_SLICE if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, MAX_SLICE))
        return True
