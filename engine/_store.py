"""The store interface: what a durable engine needs from SQLite, Redis or anything else.

A store keeps one record per task.  A task goes::

    SCHEDULED --due--> READY --claim--> RUNNING --complete--> SUCCEEDED
        ^                ^                 |  \\--fail-----> FAILED
        |                |                 |
        +----retry-------+---lease expired-+ (a worker died: the task runs again)
    READY/SCHEDULED/RETRYING --cancel--> CANCELLED

A claim leases a task to one owner (a process) until ``lease_until``; the owner
extends its leases while it runs them.  A lease that expires (the owner was
killed) puts the task back to READY: delivery is at least once, and only tasks in
flight at a crash can run twice.  Completing checks the owner, so a result from a
worker that lost its lease is dropped rather than written over a newer run.

Every time is wall-clock seconds (``time.time()``): several processes, and after a
restart several boots, share one store.  A store may keep leases on a clock of its
own, moving the times it is given by the difference of its clock and the caller's
``time.time()``: the Redis store keeps leases and due times on the server's clock
(machines sharing it keep their clocks in sync, as NTP does, for finish times and
periodic ticks), the SQLite store keeps them on the machine's boot clock, which a
wall clock stepped does not move.  A task FAILED for good is dead-lettered: ``dead``
lists those tasks and ``requeue`` gives one a fresh start.

Stores: ``_store_sqlite`` (one file, one machine) and ``_store_redis`` (many
machines; each method is one Lua script, so one atomic step as an SQLite
transaction is).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from cytask._errors import CytaskError

__all__ = [
    "CANCELLED",
    "FAILED",
    "READY",
    "RETRYING",
    "RUNNING",
    "SCHEDULED",
    "STATE_NAMES",
    "SUCCEEDED",
    "TICK_KEEP_S",
    "Claimed",
    "Finish",
    "NewTask",
    "Store",
    "StoreError",
    "TaskRecord",
    "Watch",
    "number_option",
    "open_store",
]

N = TypeVar("N", int, float)

# states as stored (the numbers are part of the on-disk format: never renumber)
READY, SCHEDULED, RUNNING, RETRYING, SUCCEEDED, FAILED, CANCELLED = 0, 1, 2, 3, 4, 5, 6
STATE_NAMES = ("pending", "scheduled", "running", "retrying", "succeeded", "failed", "cancelled")
#: a periodic tick is remembered this long past the results' cutoff (result_ttl), so
#: that an engine whose timer fires late (a busy machine, a clock behind) finds it taken
TICK_KEEP_S = 3600.0


class StoreError(CytaskError):
    """The store cannot do what was asked: cannot open, locked, corrupt, full, too new.

    The message names the store and the problem; the store object stays usable
    (a failed write was rolled back).  ``transient``: the same call may succeed later
    (Redis unreachable or read-only, a locked or full database); False when the store
    answered and refused this very call (a value larger than Redis takes).
    """

    transient: bool = False


@dataclass(slots=True)
class NewTask:
    """A task to enqueue.  ``run_at`` > now makes it SCHEDULED."""

    id: str
    name: str
    codec: str  # "json" or "pickle": how payload and result are encoded
    payload: str | bytes  # the encoded [args, kwargs] (JSON text or pickle bytes)
    priority: int
    run_at: float
    max_lost: int  # a task whose worker died this many times fails (a poison pill)


@dataclass(slots=True)
class Claimed:
    """A task leased to this owner: what a worker needs to run it."""

    id: str
    name: str
    codec: str
    payload: str | bytes
    priority: int
    attempts: int  # claims so far, this one included (the task's attempt number)
    lost: int  # how many of those claims ended with the worker dead


@dataclass(slots=True)
class Finish:
    """The end of one run: SUCCEEDED/FAILED with a result or error, or a retry at run_at."""

    id: str
    state: int  # SUCCEEDED, FAILED or RETRYING
    result: str | bytes | None = None
    error: str | None = None  # JSON: {"type": "module.Class", "message": ..., "traceback": ...}
    run_at: float = 0.0  # RETRYING: when it is due again
    # the claim's attempt number (``Claimed.attempts``), a fencing token: the end of an
    # older run is dropped once the task was claimed again, also by the same owner (a
    # process stopped past its lease, whose task went back and came to it again); 0
    # checks only the owner
    attempt: int = 0


@dataclass(slots=True)
class TaskRecord:
    """Everything the store knows about one task (``Store.get``)."""

    id: str
    name: str
    codec: str
    priority: int
    state: int
    attempts: int
    lost: int
    run_at: float
    enqueued_at: float
    started_at: float | None
    finished_at: float | None
    result: str | bytes | None
    error: str | None
    progress: float
    progress_message: str | None
    owner: str | None
    cancel_requested: bool = False  # cancel() while it ran: its worker tells the task
    payload: str | bytes | None = None  # the encoded [args, kwargs], as enqueued

    @property
    def status(self) -> str:
        return STATE_NAMES[self.state]

    @property
    def terminal(self) -> bool:
        return self.state >= SUCCEEDED


class Watch:
    """What an idle feeder sleeps on: ``fd`` becomes readable when another process
    may have committed work.  ``fd`` is -1 where the store has nothing to wait on:
    the feeder then asks ``Store.changed()`` 20 times a second."""

    fd: int = -1

    def drain(self) -> bool:
        """Consume what made ``fd`` readable; True if it was news of the store."""
        return False

    def close(self) -> None:
        """Stop watching."""


class Store(abc.ABC):
    """One durable task store, shared by every process that opens the same URL.

    Thread-safe: producers, the claiming thread and the result writer of one
    engine call it concurrently.  Each method is one atomic step (one
    transaction): after it returned, its effect survives a ``kill -9`` of the
    process (and an OS crash too when the store says so, see ``durable_on_power_loss``).
    """

    url: str
    durable_on_power_loss: bool
    #: the largest encoded payload or result (bytes) the store takes, None if unknown:
    #: a producer is told at submit, before its row joins a commit shared with others
    max_value: int | None = None
    #: what sets ``max_value``, named in the error of a submit over it
    max_value_source = "the store's limit"

    @abc.abstractmethod
    def enqueue(
        self, tasks: Sequence[NewTask], *, owner: str | None = None, lease_until: float = 0.0
    ) -> None:
        """Add tasks in one commit.  With ``owner``, due ones are claimed by it at once
        (attempt 1, leased until ``lease_until``): the producer runs them itself."""

    @abc.abstractmethod
    def claim(self, owner: str, n: int, lease_until: float) -> list[Claimed]:
        """Lease up to ``n`` READY tasks, highest priority (lowest number) first, FIFO."""

    @abc.abstractmethod
    def extend(self, owner: str, ids: Sequence[str], lease_until: float) -> int:
        """Extend the leases ``owner`` still holds on ``ids``; returns how many it holds."""

    @abc.abstractmethod
    def finish(self, owner: str, done: Sequence[Finish], now: float) -> int:
        """Record the end of runs in one commit; returns how many were recorded (those
        whose lease ``owner`` still held, on the attempt ``Finish.attempt`` names: a
        result of a lost lease is dropped)."""

    @abc.abstractmethod
    def release(self, owner: str, ids: Sequence[str]) -> int:
        """Give back claimed tasks that never started (shutdown): READY again, the
        claim not counted as an attempt."""

    @abc.abstractmethod
    def cancel(self, task_id: str, now: float) -> bool:
        """Cancel a task that no worker holds; False if it is running or ended."""

    @abc.abstractmethod
    def request_cancel(self, task_id: str) -> bool:
        """Ask the worker running a RUNNING task to stop it (the task sees
        ``current_task().cancel_requested``); False if the task is not running."""

    @abc.abstractmethod
    def cancel_requests(self, owner: str) -> list[str]:
        """Ids of the RUNNING tasks ``owner`` holds whose cancellation was requested."""

    @abc.abstractmethod
    def get(self, task_id: str) -> TaskRecord | None:
        """The task's record, or None (never enqueued, or expired after result_ttl)."""

    @abc.abstractmethod
    def set_progress(
        self,
        task_id: str,
        percent: float,
        message: str | None,
        owner: str | None = None,
        attempt: int = 0,
    ) -> None:
        """Store a running task's progress.  With ``owner`` and ``attempt`` (a run's own
        report), only while that run holds the task: a run whose lease was lost must
        not write over the progress of the run that took over."""

    @abc.abstractmethod
    def promote_due(self, now: float) -> int:
        """Make SCHEDULED and RETRYING tasks whose time came READY; returns how many."""

    @abc.abstractmethod
    def next_due(self) -> float | None:
        """The earliest ``run_at`` of a SCHEDULED or RETRYING task, or None."""

    @abc.abstractmethod
    def recover_expired(self, now: float) -> int:
        """Put RUNNING tasks whose lease expired back to READY (their worker died),
        or FAILED once lost ``max_lost`` times; returns how many."""

    @abc.abstractmethod
    def claim_tick(self, key: str, tick: int) -> bool:
        """True for exactly one caller per (key, tick) across all processes: a
        periodic schedule's run at that tick (ms since the epoch) belongs to it.
        ``expire`` forgets ticks ``TICK_KEEP_S`` older than its cutoff: with
        result_ttl=0 it forgot a tick at once, and an engine whose timer fired a
        moment later claimed the same tick again (the schedule ran twice)."""

    @abc.abstractmethod
    def expire(self, finished_before: float) -> int:
        """Delete ended tasks finished before the cutoff (result_ttl); returns how many."""

    @abc.abstractmethod
    def has_work(self) -> bool:
        """True while any task is READY, SCHEDULED, RUNNING or RETRYING."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Tasks per state name (for progress displays)."""

    @abc.abstractmethod
    def changed(self) -> bool:
        """True if another connection committed since the last call: a cheap check
        an idle worker makes before it asks for work."""

    @abc.abstractmethod
    def dead(self, limit: int = 100) -> list[TaskRecord]:
        """FAILED tasks (retries spent, or lost ``max_lost`` times), newest first."""

    @abc.abstractmethod
    def requeue(self, task_id: str) -> bool:
        """A FAILED task READY again, with its attempts and losses reset; False if
        the task is not FAILED."""

    def watch(self) -> Watch:
        """A ``Watch`` for the feeder of one engine (closed by it)."""
        return Watch()

    def retry_until(self, deadline: float) -> None:
        """Calls stop waiting for an unreachable server at ``deadline`` (monotonic),
        whatever their own retry time; ``math.inf`` lifts it.  A shutdown with a
        timeout sets it: a drain must not outlast its deadline waiting for Redis."""
        return None  # a store without a server never waits for one

    def reread_limits(self) -> None:
        """Read ``max_value`` from the server again (it may have been reconfigured)."""
        return None  # a store without a server keeps its limits

    def reopen(self) -> Store:
        """A new store on the same data with the same options (a fork child's own:
        connections never cross a fork).  A store with options beyond its URL
        overrides this: reopened from the URL alone, a store made with
        ``prefix="app"`` wrote the child's tasks under another prefix."""
        return open_store(self.url)

    @abc.abstractmethod
    def close(self) -> None:
        """Close connections; the store is unusable afterwards."""


def number_option(
    kind: Callable[[Any], N], name: str, given: Any, options: dict[str, str], default: N, url: str
) -> N:
    """A store's numeric option: the keyword argument, else the URL's query, else
    ``default``; text that is no number is named with its option."""
    value = given if given is not None else options.get(name, default)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"Expected a number for {name} in store {url!r}, got {value!r}") from None


def open_store(url: Any, **options: Any) -> Store:
    """A store from a URL: ``sqlite:///relative/path.db``, ``sqlite:////abs/path.db``,
    ``redis://host:6379/0`` (also ``rediss://`` with TLS, ``unix://`` sockets, and
    ``valkey://``)."""
    if isinstance(url, Store):
        return url
    if not isinstance(url, str):
        raise TypeError(f"Expected a store URL (str) for store, got {type(url).__name__}")
    scheme, sep, _ = url.partition("://")
    if scheme == "sqlite" and sep:
        from cytask._store_sqlite import SQLiteStore

        return SQLiteStore(url, **options)
    if scheme in ("redis", "rediss", "unix", "valkey", "valkeys") and sep:
        from cytask._store_redis import RedisStore

        return RedisStore(url, **options)
    raise ValueError(
        f"Expected a store URL like 'sqlite:///path/to/tasks.db' or 'redis://host:6379/0' "
        f"for store, got {url!r}"
    )
