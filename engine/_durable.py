"""Durable tasks: an ``Engine(store=...)`` commits each task to a store before
``delay()`` returns, runs it on the engine's native workers, and commits its result.

The pieces, all in this module, beside the in-process engine:

- **submit**: encode the arguments, commit one row.  A task this process can run
  soon (it has workers and fewer than ``max_inflight`` tasks leased) is committed
  already leased to this process and pushed straight onto the native ring: no
  polling, no second write.  Concurrent producers share commits (group commit:
  whoever takes the write lock commits every row waiting for it).
- **the feeder thread** claims READY tasks other processes committed, makes due
  delayed and retrying tasks READY, puts tasks of dead workers (expired leases)
  back, extends the leases this process holds, and expires old results.  Idle, it
  sleeps on inotify (the store's WAL file changes when anyone commits) or on a timer.
- **the writer thread** commits results in batches; a handle's waiters wake once
  the result is committed, so a result you saw survives a crash.
- **the commit thread of asubmit** (started on the first one, gone after a second
  idle) commits the rows event loops gathered, one commit per loop turn at most, and
  wakes their requests on their loops: a store that makes a commit wait holds up
  those requests, never a loop.

Delivery is at least once.  Only a task in flight when its worker died runs
again (after its lease); ``current_task().attempt`` tells it which attempt it is.
"""

from __future__ import annotations

import _thread
import contextlib
import math
import os
import queue
import select
import threading
import time
import types
import weakref
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from cytask._compile import plan_for
from cytask._context import current_durable_run
from cytask._core import TaskHandle, TaskOptions, report_unraisable
from cytask._enums import Priority, TaskStatus
from cytask._errors import CancelledError, EngineClosed, TaskTimeout
from cytask._serial import (
    decode_args,
    decode_error,
    decode_result,
    encode_args,
    encode_error,
    encode_result,
    name_for,
    new_task_id,
    resolve,
)
from cytask._store import (
    CANCELLED,
    FAILED,
    RETRYING,
    RUNNING,
    SUCCEEDED,
    Claimed,
    Finish,
    NewTask,
    Store,
    StoreError,
    Watch,
    open_store,
)
from cytask._task import Task
from cytask._validate import MIN_LEASE_S, check_callable, check_duration

if TYPE_CHECKING:
    from cytask._engine import Engine
    from cytask._periodic import Periodic

__all__ = ["DurableHandle", "DurableRuntime", "current_durable"]

R = TypeVar("R")

#: the _Run the calling thread (or asyncio task) runs now (defined in _context, so that
#: current_task() needs no store code)
_current = current_durable_run

#: tasks shorter than this on average are claimed ahead as deep as max_inflight
_SHORT_TASK_S = 0.002

#: the longest a group commit waits for producers inside ``_submit`` to add their rows
_GATHER_S = 0.0005
#: seconds the commit thread of asubmit waits for work before it leaves
_AIO_IDLE_S = 1.0
#: a result committed less than this after the last commit waits as long for company
_GATHER_RESULTS_S = 0.001
#: a claim less than this after the last one (that emptied the store) waits until then
_GATHER_CLAIMS_S = 0.0005
#: seconds between looks for cancel requests of tasks this process runs (at most)
_CANCEL_LOOK_S = 0.5
#: seconds between maintenance passes (recover, extend, expire) at most
_MAINTAIN_S = 60.0

#: set by ``cytask worker`` while it imports the task modules: engines they create
#: with a store only produce, the worker's own engine consumes
PRODUCE_ONLY = False


def current_durable() -> DurableHandle[Any] | None:
    """The durable handle of the task the calling worker thread runs, or None."""
    run: _Run | None = _current.get()
    return None if run is None else run.current_handle()


class _Run:
    """One claimed task on its way through the native ring: the callable it runs."""

    __slots__ = ("args", "claimed", "fn", "handle", "kwargs", "native", "rt", "state", "task")

    def __init__(
        self,
        rt: DurableRuntime,
        claimed: Claimed,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.rt = rt
        self.claimed = claimed
        self.fn = fn
        self.task = fn if isinstance(fn, Task) else None
        self.args = args
        self.kwargs = kwargs
        self.handle: DurableHandle[Any] | None = None  # made when current_task() asks
        self.native: TaskHandle[Any] | None = None
        self.state = 0  # 0 queued, 1 running, 2 ended (first end wins; changed under rt._lock)

    def __call__(self) -> Any:
        rt = self.rt
        with rt._lock:
            if self.state != 0:
                return None
            self.state = 1
        token = _current.set(self)
        began = time.perf_counter()
        try:
            value = self._callable()(*self.args, **self.kwargs)
        except BaseException as exc:
            rt._ended(self, None, exc)
            raise
        finally:
            _current.reset(token)
        if type(value) is types.CoroutineType:  # an async task: it ends on the loop
            rt._ran_for(0.0)  # it holds no worker while it awaits: claim ahead deeply
            return self._await(value)
        rt._ran_for(time.perf_counter() - began)
        rt._ended(self, value, None)
        return value

    async def _await(self, coro: Any) -> Any:
        token = _current.set(self)  # this asyncio task's own context
        try:
            value = await coro
        except BaseException as exc:
            import asyncio  # loaded: this runs on an event loop

            if isinstance(exc, asyncio.CancelledError) and self.rt._stopping.is_set():
                self.rt._lost(self)  # shutdown's deadline cancelled it: not its failure
            else:
                self.rt._ended(self, None, exc)
            raise
        finally:
            _current.reset(token)
        self.rt._ended(self, value, None)
        return value

    def _callable(self) -> Callable[..., Any]:
        """What runs: a ``compile_to_c`` task's compiled code (through its caller that
        lets go of the GIL, so the feeder keeps the lease while it runs), once the
        compile stage chose it for these arguments; else the Python function."""
        task = self.task
        if task is None or not task.compile_to_c:
            return self.fn
        plan = plan_for(task, self.args, self.kwargs)
        if plan is None:
            return task.fn
        if callable(plan):
            return plan  # type: ignore[no-any-return]
        return getattr(task._compiled, "_callable", None) or task.fn

    def current_handle(self) -> DurableHandle[Any]:
        """The handle ``current_task()`` gives inside this run (made on first ask)."""
        if self.handle is None:
            self.handle = DurableHandle(self.rt, self.claimed.id, self.claimed.name)
            self.handle._attempt = self.claimed.attempts
        return self.handle

    def _native_done(self, h: TaskHandle[Any]) -> None:
        """A time limit or a cancellation ended the native handle first."""
        exc = h.exception(0) if h.status == TaskStatus.FAILED else None
        if isinstance(exc, TaskTimeout):
            self.rt._ended(self, None, exc)


class DurableHandle(Generic[R]):
    """A task in a store: what ``delay()`` returns with ``Engine(store=...)``.

    The same questions as a ``TaskHandle`` (``status``, ``result()``, ``cancel()``,
    ``attempts``, ``progress`` ...), answered from the store, so a handle made by
    ``eng.get(task_id)`` in another process, or after a restart, answers alike.
    ``task_id`` is a 32-digit hex string (48 bits of milliseconds, 80 random bits):
    unique across processes, machines and restarts.
    Results come back as the serializer stores them (JSON: tuples read as lists).
    """

    __slots__ = ("_attempt", "_name", "_rt", "task_id")

    def __init__(self, rt: DurableRuntime, task_id: str, name: str | None = None) -> None:
        self._rt = rt
        self.task_id = task_id
        self._name = name
        self._attempt = 0

    def __repr__(self) -> str:
        return f"<DurableHandle {self.task_id} {self._name or ''} {self.status.value}>"

    def _record(self) -> Any:
        return self._rt.store.get(self.task_id)

    @property
    def status(self) -> TaskStatus:
        rec = self._record()
        if rec is None:
            raise LookupError(f"task {self.task_id} is not in the store (expired after result_ttl)")
        return TaskStatus(rec.status)

    @property
    def name(self) -> str | None:
        if self._name is None:
            rec = self._record()
            self._name = None if rec is None else rec.name
        return self._name

    @property
    def priority(self) -> Priority:
        rec = self._record()
        return Priority(rec.priority if rec is not None else Priority.NORMAL)

    @property
    def attempts(self) -> int:
        """Runs started so far, including runs whose worker died."""
        rec = self._record()
        return 0 if rec is None else int(rec.attempts)

    @property
    def attempt(self) -> int:
        """Inside the task: which attempt this is (1 the first time); else ``attempts``."""
        return self._attempt or self.attempts

    @property
    def cancel_requested(self) -> bool:
        """``cancel()`` was called while the task ran (here, or in another process)."""
        run = self._rt._inflight.get(self.task_id)
        if run is not None and run.native is not None:
            return run.native.cancel_requested
        rec = self._record()
        return rec is not None and bool(rec.cancel_requested)

    @property
    def progress(self) -> float:
        rec = self._record()
        return 0.0 if rec is None else float(rec.progress)

    @property
    def progress_message(self) -> str | None:
        rec = self._record()
        return None if rec is None else rec.progress_message

    def set_progress(self, percent: float, message: str | None = None) -> None:
        if not isinstance(percent, (int, float)) or isinstance(percent, bool):
            raise TypeError(f"Expected a number for percent, got {type(percent).__name__}")
        if message is not None and not isinstance(message, str):
            raise TypeError(f"Expected str or None for message, got {type(message).__name__}")
        percent = max(0.0, min(100.0, float(percent)))
        if self._attempt:  # the run's own handle: only while this run holds the task
            rt = self._rt
            rt.store.set_progress(self.task_id, percent, message, rt.owner, self._attempt)
        else:
            self._rt.store.set_progress(self.task_id, percent, message)

    def done(self) -> bool:
        rec = self._record()
        return rec is None or rec.terminal

    def cancelled(self) -> bool:
        rec = self._record()
        return rec is not None and rec.state == CANCELLED

    def running(self) -> bool:
        rec = self._record()
        return rec is not None and rec.state == RUNNING

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the task ended (its end committed); False if ``timeout`` passed."""
        return self._rt._wait(self.task_id, timeout) is not None

    def result(self, timeout: float | None = None) -> R:
        rec = self._rt._wait(self.task_id, timeout)
        if rec is None:
            raise TimeoutError(f"task {self.task_id} did not finish within {timeout} s")
        if rec.state == SUCCEEDED:
            return decode_result(rec.codec, rec.result)  # type: ignore[no-any-return]
        raise self._error(rec)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        rec = self._rt._wait(self.task_id, timeout)
        if rec is None:
            raise TimeoutError(f"task {self.task_id} did not finish within {timeout} s")
        return None if rec.state == SUCCEEDED else self._error(rec)

    def _error(self, rec: Any) -> BaseException:
        if rec.state == CANCELLED:
            return CancelledError(f"task {self.task_id} was cancelled")
        if rec.state == 0 and rec.error is None:  # expired: no record
            return LookupError(f"task {self.task_id} is not in the store")
        return decode_error(rec.error)

    def cancel(self) -> bool:
        """Cancel a task no worker has started: True if it will never run.  A running
        task gets ``cancel_requested`` (and False), as without a store: at once in
        this process, within about half a second in another one."""
        return self._rt._cancel(self.task_id)

    def add_done_callback(self, fn: Callable[[DurableHandle[R]], object]) -> None:
        """Call ``fn(handle)`` once the task's end is committed (at once if it has).

        It runs on the engine's result writer when this process ran the task, on a
        watcher thread that looks at the store every 50 ms when another process did,
        or on the calling thread if the task has already ended; an ``Exception`` it
        raises goes to ``sys.unraisablehook``.
        """
        if not callable(fn):
            raise TypeError(f"Expected a callable for fn, got {type(fn).__name__}")
        self._rt._add_callback(self, fn)

    def __await__(self) -> Generator[Any, None, R]:
        return self._wait_async().__await__()

    async def _wait_async(self) -> R:
        """``await handle`` without a thread blocked for the task's whole run.

        A thread of the loop's default executor (6 of them on 2 cores) held per await
        starved every other ``to_thread`` user; and an await that was cancelled (a
        client that went away) left its thread waiting for a task that may never end
        (no worker running), which ``asyncio.run`` then waits for at exit: a server
        that never exits.  Instead the store's done callback wakes the loop; the store
        is read on a thread for a moment, never on the loop.
        """
        import asyncio  # not at import: `import cytask` does not load asyncio

        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        def on_end(_h: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_resolve, ended)

        rt = self._rt
        await asyncio.to_thread(rt._add_callback, self, on_end)
        try:
            # the store's watcher stops when the engine shuts down: then answer as the
            # store does now (a task still going raises TimeoutError) rather than never
            while not ended.done() and not rt._closed.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(ended), 1.0)
        finally:
            rt._drop_callback(self.task_id, on_end)
        return await asyncio.to_thread(self.result, 0)


def _resolve(fut: Any) -> None:
    if not fut.done():
        fut.set_result(None)


class _Expired:
    """What ``_wait`` returns for a task that left the store (never ran or expired)."""

    state = 0
    error = None
    codec = "json"
    result = None
    terminal = True


class DurableRuntime:
    """The store side of one engine: submit, feeder thread, result writer thread."""

    def __init__(
        self,
        engine: Engine,
        store: str | Store,
        serializer: str,
        lease: float,
        consume: bool,
        result_ttl: float | None,
    ) -> None:
        if serializer not in ("json", "pickle"):
            raise ValueError(f"Expected 'json' or 'pickle' for serializer, got {serializer!r}")
        check_duration(lease, "lease", positive=True)  # inf: the feeder could not sleep
        if lease < MIN_LEASE_S:
            raise ValueError(
                f"Expected lease >= {MIN_LEASE_S} seconds (leases are extended every "
                f"lease/3 while a task runs; a shorter one lapses under a live worker), "
                f"got {lease!r}"
            )
        self.engine = engine
        self.store = open_store(store)
        self.codec = serializer
        self.lease = float(lease)
        self.result_ttl = result_ttl
        self.consume = consume = consume and not PRODUCE_ONLY
        self.owner = f"{_hostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self.max_inflight = max(256, 4 * engine.max_workers) if consume else 0
        self._lock = threading.Lock()  # guards _inflight, _held and every _Run.state
        self._inflight: dict[str, _Run] = {}  # claimed by this process, result not committed
        self._held = 0  # leases this process holds or is about to take (<= max_inflight)
        # how long this process's tasks run (moving average, s; None before the first):
        # the feeder claims ahead only as deep as short tasks need (see _claim_cap)
        self._task_s: float | None = None
        self._waiters: dict[str, list[threading.Event]] = {}
        self._names: dict[int, str] = {}  # id(Task) -> stored name, checked once
        self._callbacks: dict[str, list[tuple[DurableHandle[Any], Callable[[Any], object]]]] = {}
        self._watcher: threading.Thread | None = None  # runs while callbacks wait
        self._closed = threading.Event()
        # group commit (see _commit): rows wait in _batch until a producer commits them
        self._batch_lock = threading.Lock()
        self._batch = _Batch()  # the open batch; guarded by _batch_lock
        # asubmit's rows per event loop, committed once per turn of that loop; each
        # loop touches only its own entry, from its own thread
        self._loop_batches: dict[Any, _LoopBatch] = {}
        # the loop batches handed to the commit thread (see _flush_loop_batch): all
        # of the _aio_ fields are guarded by _aio_lock
        self._aio_lock = threading.Lock()
        self._aio_todo: list[_LoopBatch] = []  # handed over, not taken by the thread
        self._aio_thread: threading.Thread | None = None  # the commit thread, if any
        # held while the commit thread has nothing to take: released (once) when
        # _aio_signalled turns True, acquired again when the thread turns it False
        self._aio_wake = _thread.allocate_lock()
        self._aio_wake.acquire()
        self._aio_signalled = False
        self._aio_closed = False  # shut down: the thread left and none starts again
        # producers inside _submit whose rows are not in a batch yet; guarded by _batch_lock
        self._arriving = 0
        # the lock of the producer committing a batch (the others wait), None when none
        # is; guarded by _batch_lock
        self._committer: _thread.LockType | None = None
        # released by the last producer to arrive, while a committer gathers; guarded
        # by _batch_lock
        self._gatherer: _thread.LockType | None = None
        self._results: queue.SimpleQueue[Finish | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._give_up_at = math.inf  # monotonic: the shutdown's deadline (stop_claiming)
        self._fd_lock = threading.Lock()  # guards closing the pipe against writes to it
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._sleeping = False
        # what the feeder sleeps on; an engine that only produces has no feeder, and a
        # Redis subscription nobody reads would pile up messages on the server
        self._watch = self.store.watch() if consume else Watch()
        self._feeder: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        if consume:
            self._writer = threading.Thread(
                target=self._write_loop, name=f"{engine.name}-store-writer", daemon=True
            )
            self._writer.start()
            self._feeder = threading.Thread(
                target=self._feed_loop, name=f"{engine.name}-store-feeder", daemon=True
            )
            self._feeder.start()

    # -- submitting ---------------------------------------------------------------------

    def _task_name(self, t: Task[Any, Any]) -> str:
        name = self._names.get(id(t))
        if name is None:
            name_for(t.fn, t.name)  # a lambda or closure cannot be imported by a worker
            from cytask._serial import register

            register(t.name, t)
            name = self._names[id(t)] = t.name
        return name

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> DurableHandle[R]:
        """``Engine.submit`` with a store."""
        if isinstance(fn, Task):
            return self.submit_task(fn, args, kwargs, fn.options.priority, None)
        if not callable(fn):
            raise TypeError(f"Expected a callable for fn, got {type(fn).__name__}: {fn!r}")
        return self.submit_fn(fn, args, kwargs, int(Priority.NORMAL), None)

    async def asubmit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> DurableHandle[Any]:
        """``Engine.asubmit`` with a store: the rows of every request an event loop
        handles in one turn share one commit, made off the loop's thread (see
        _flush_loop_batch): a slow or unreachable store never blocks the loop."""
        if isinstance(fn, Task):
            name, priority = self._task_name(fn), fn.options.priority
        else:
            check_callable(fn, "fn")
            name, priority = name_for(fn), int(Priority.NORMAL)
        (row,) = self._new_rows(fn, name, [(args, kwargs)], priority, None)
        import asyncio  # here: a caller that awaits has it loaded already

        loop = asyncio.get_running_loop()
        lb = self._loop_batches.get(loop)
        if lb is None:
            self._forget_closed_loops()
            lb = _LoopBatch(loop)
            loop.call_soon(self._flush_loop_batch, loop)  # first: a batch is never unflushed
            self._loop_batches[loop] = lb
        lb.rows.append((row, fn))
        done = loop.create_future()  # woken by _wake_requests, whatever the outcome
        lb.dones.append(done)
        await done
        if lb.error is not None:
            raise lb.error
        return DurableHandle(self, row.id, name)

    def _forget_closed_loops(self) -> None:
        """Drop the batches of event loops closed before their commit ran (stopped and
        closed in the turn a request was made): those requests died with their loop."""
        for loop in [loop for loop in list(self._loop_batches) if loop.is_closed()]:
            self._loop_batches.pop(loop, None)

    def _flush_loop_batch(self, loop: Any) -> None:
        """Hand the rows ``asubmit`` gathered on `loop` during one turn to the commit
        thread, which commits them in one commit (with those of other turns and loops
        that wait meanwhile) and then wakes the batch's requests on their loop.

        Under load an event loop handles many requests per turn: each awaiting its own
        commit capped an endpoint at a few thousand requests/s; one commit per turn
        costs each request a few us.  The commit runs on a thread of the engine, never
        on the loop's: an SQLite file another process holds locked, or Redis away,
        stalls the requests that wait for their commit, not the loop (its other
        requests, its health checks).  Tasks this process runs itself are leased and
        started by the commit thread, not by the awaiting coroutine, so a request
        cancelled meanwhile leaves no lease held and nothing unstarted; a loop closed
        before this ran holds none.  A signal raised in here (a loop run without
        asyncio.run's Ctrl-C handler) ends the turn's requests with StoreError unless
        the batch reached the commit thread; only one at this callback's first
        instruction leaves its turn's batch.
        """
        lb: _LoopBatch | None = None
        try:
            lb = self._loop_batches.get(loop)
            self._loop_batches.pop(loop, None)  # (in two steps: see the handler)
            if lb is not None:
                self._hand_over(lb)
        except BaseException as exc:  # a signal at any point in here, or no thread
            if lb is None:  # still in _loop_batches: no other flush will take it
                lb = self._loop_batches.pop(loop, None)
            if lb is not None and not self._handed(lb):
                _end_batch(lb, _as_store_error(exc, "before it began: it is not stored"))
            if not isinstance(exc, Exception):
                raise

    def _hand_over(self, lb: _LoopBatch) -> None:
        """Queue a loop's batch for the commit thread (started if none runs)."""
        with self._aio_lock:
            if self._aio_closed or self._stopping.is_set():
                _end_batch(lb, self._closed_before_commit())
                return
            if self._aio_thread is None:
                t = threading.Thread(
                    target=_commit_loop_batches,
                    args=(weakref.ref(self), self._aio_wake),
                    name=f"{self.engine.name}-store-aio",
                    daemon=True,
                )
                t.start()
                self._aio_thread = t
            if not self._aio_signalled:
                self._aio_signalled = True
                self._aio_wake.release()
            self._aio_todo.append(lb)

    def _handed(self, lb: _LoopBatch) -> bool:
        """Whether `lb` reached the commit thread (which then ends its requests); from
        the shared state alone, so a signal anywhere in ``_hand_over`` is repaired."""
        with self._aio_lock:
            return lb.taken or lb.ended or lb in self._aio_todo

    def _closed_before_commit(self) -> EngineClosed:
        return EngineClosed(
            f"engine {self.engine.name} was shut down before this task was "
            f"committed; create a new Engine"
        )

    def _take_loop_batches(self, woken: bool) -> list[_LoopBatch] | None:
        """The commit thread's next batches ([] if none yet), or None when it leaves:
        the engine shut down, or nothing came for ``_AIO_IDLE_S``."""
        with self._aio_lock:
            if self._aio_signalled:  # woken (or about to be): consume the wake-up
                self._aio_wake.acquire(blocking=False)
                self._aio_signalled = False
            todo = self._aio_todo
            if todo:
                self._aio_todo = []
                for lb in todo:
                    lb.taken = True
                return todo
            stopping = self._stopping.is_set()
            if stopping or not woken:
                self._aio_thread = None
                self._aio_closed = stopping
                return None
            return []

    def _commit_loop_batches(self, batches: list[_LoopBatch]) -> None:
        """On the commit thread: commit the rows of `batches` in one commit, start the
        tasks leased to this process, then wake each batch's requests on its loop."""
        rows = [item for lb in batches for item in lb.rows]
        held = [0]  # the leases _hold reserved
        committed = False
        error: BaseException | None = None
        try:
            if self._stopping.is_set():  # shut down since these requests: commit nothing
                raise self._closed_before_commit()
            local = self._hold(len(rows), held)
            claimed = [row for row, _ in rows[:local]]
            ready = [row for row, _ in rows[local:]]
            self._commit(claimed, ready)
            committed = True
            progress = [0, 0]  # see _start_here
            try:
                self._start_here(rows[:local], progress)
            except BaseException as exc:
                self._not_started(rows[:local], progress, exc)
            if ready and self.consume:
                self._wake()
        except BaseException as exc:  # a store error (no signal reaches this thread)
            if committed:
                report_unraisable(exc, "cytask could not start the tasks it committed")
            else:
                self._unhold(held[0])
                error = _as_store_error(exc, "in the commit thread: it may or may not be stored")
        for lb in batches:
            _end_batch(lb, error)

    def _stop_loop_commits(self) -> None:
        """Shutdown: the commit thread commits what it has, then leaves; batches
        handed over later end with EngineClosed (see ``_hand_over``)."""
        with self._aio_lock:
            t = self._aio_thread
            if t is None:
                self._aio_closed = True
            elif not self._aio_signalled:
                self._aio_signalled = True
                self._aio_wake.release()
        if t is not None and t is not threading.current_thread():
            t.join()

    def submit_task(
        self,
        t: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        priority: int,
        delay: float | None,
    ) -> DurableHandle[Any]:
        return self._submit(t, self._task_name(t), [(args, kwargs)], priority, delay)[0]

    def submit_fn(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        priority: int,
        delay: float | None,
    ) -> DurableHandle[Any]:
        if isinstance(fn, Task):
            return self.submit_task(fn, args, kwargs, priority, delay)
        return self._submit(fn, name_for(fn), [(args, kwargs)], priority, delay)[0]

    def submit_many(
        self, fn: Callable[..., Any], arg_tuples: Iterable[Any], priority: int | None
    ) -> list[DurableHandle[Any]]:
        if isinstance(fn, Task):
            name = self._task_name(fn)
            prio = fn.options.priority if priority is None else priority
        else:
            name, prio = name_for(fn), int(Priority.NORMAL) if priority is None else priority
        calls: list[tuple[tuple[Any, ...], dict[str, Any] | None]] = [
            (_as_args(a, i), None) for i, a in enumerate(arg_tuples)
        ]
        return self._submit(fn, name, calls, prio, None)

    def _submit(
        self,
        fn: Callable[..., Any],
        name: str,
        calls: list[tuple[tuple[Any, ...], dict[str, Any] | None]],
        priority: int,
        delay: float | None,
    ) -> list[DurableHandle[Any]]:
        arrival = [0]  # 1 while counted in _arriving (see _arrived)
        held = [0]  # the leases _hold reserved
        progress = [0, 0]  # see _start_here
        local = -1  # -1 until the rows are committed
        try:
            with self._batch_lock:
                self._arriving += 1  # a committer gathering rows waits for ours (_commit)
                arrival[0] = 1
            rows = self._new_rows(fn, name, calls, priority, delay)
            n = 0 if delay else self._hold(len(rows), held)
            self._commit(rows[:n], rows[n:], arrival)
            local = n  # from here on the rows are stored
            self._start_here([(row, fn) for row in rows[:local]], progress)
        except BaseException as exc:
            if local < 0:
                self._unhold(held[0])
                if arrival[0]:  # left before its rows reached the batch (a bad argument)
                    with self._batch_lock:
                        self._arrived(arrival)
                raise
            self._not_started([(row, fn) for row in rows[:local]], progress, exc)
        if local < len(rows) and self.consume:
            self._wake()
        return [DurableHandle(self, row.id, name) for row in rows]

    def _new_rows(
        self,
        fn: Callable[..., Any],
        name: str,
        calls: list[tuple[tuple[Any, ...], dict[str, Any] | None]],
        priority: int,
        delay: float | None,
    ) -> list[NewTask]:
        """The store rows of `calls` (their arguments encoded: TypeError names a bad one)."""
        if self._stopping.is_set():
            raise EngineClosed(f"engine {self.engine.name} is shut down; create a new Engine")
        codec = self.codec
        now = time.time()
        run_at = now + delay if delay else now
        max_lost = getattr(self.store, "max_lost", 10)
        rows = [
            NewTask(new_task_id(), name, codec, encode_args(codec, a, k, fn), priority, run_at,
                    max_lost)
            for a, k in calls
        ]  # fmt: skip
        if self.store.max_value is not None:  # here, not in a commit shared with others
            for row in rows:
                self._check_size(name, row.payload)
        return rows

    def _check_size(self, name: str, p: str | bytes) -> None:
        """Refuse arguments larger than the store takes (asking it again first: the
        limit may have been raised since)."""
        for reread in (False, True):
            if reread:
                self.store.reread_limits()
            limit = self.store.max_value
            if limit is None:
                return
            size = len(p) if isinstance(p, bytes) or len(p) * 4 <= limit else len(p.encode())
            if size <= limit:
                return
            if reread:
                raise ValueError(
                    f"Expected the arguments of task {name} to encode to at most {limit} "
                    f"bytes ({self.store.max_value_source}), got {size} "
                    f"bytes: pass a reference to the data (a path, a key) instead"
                )

    def _hold(self, n: int, held: list[int]) -> int:
        """Reserve leases for up to n new tasks this process will run itself (committed
        already claimed, started without a round trip); how many it got, also put in
        ``held[0]`` with no call between (a signal raised on the way out loses none)."""
        if not self.consume:
            return 0
        with self._lock:
            local = max(0, min(n, self.max_inflight - self._held))
            self._held += local
            held[0] = local
        return local

    def _unhold(self, n: int) -> None:
        if n:
            with self._lock:
                self._held -= n

    def _start_here(
        self, rows: list[tuple[NewTask, Callable[..., Any]]], progress: list[int]
    ) -> None:
        """Run committed rows (each with its callable) whose leases this process holds.
        ``progress``: [rows started, 1 once _start gave back the one it could not start]
        (the caller gives back the rest: see ``_not_started``)."""
        for row, fn in rows:
            claimed = Claimed(row.id, row.name, row.codec, row.payload, row.priority, 1, 0)
            self._start(claimed, fn, progress)

    def _not_started(
        self,
        rows: list[tuple[NewTask, Callable[..., Any]]],
        progress: list[int],
        exc: BaseException,
    ) -> None:
        """``_start_here`` stopped (`exc`): give back the committed rows it did not start,
        READY for any worker.  They are stored, so their callers get handles if the
        engine shut down since the commit (shutdown() racing a submit); anything else
        (an interrupt) is raised."""
        rest = [row.id for row, _ in rows[progress[0] + progress[1] :]]
        if rest:
            self._unhold(len(rest))
            try:
                self.store.release(self.owner, rest)
            except Exception as err:  # their leases expire: another worker runs them
                report_unraisable(err, "cytask could not give back unstarted tasks")
        if not isinstance(exc, EngineClosed):
            raise exc

    def _commit(
        self, claimed: list[NewTask], ready: list[NewTask], arrival: list[int] | None = None
    ) -> None:
        """Commit rows, sharing the commit with the other producers (group commit).

        A producer adds its rows to the open batch.  If no commit is in progress it
        commits the batch itself, else it sleeps on a lock of its own until its batch
        is committed, or until the committer hands it the next batch to commit.  A
        committer first waits, at most ``_GATHER_S``, for the producers already inside
        ``_submit`` to add their rows; a lone producer never waits.  Why not a commit
        lock: a thread that let go of it took it straight back (before a woken waiter
        ran), and 8 producer threads committed one row at a time.  Why a lock per
        waiter, not a Condition: every woken thread took the Condition's lock again,
        one after the other, on two CPUs.

        A signal (KeyboardInterrupt) may raise in the main thread at any call or
        return in here: ``_interrupted`` repairs from the shared state alone (who holds
        the committer's role, which batch is open), never from how far this got.
        """
        me = _thread.allocate_lock()  # our waiter, and our name as the committer
        batch: _Batch | None = None
        try:
            with self._batch_lock:
                batch = self._batch
                batch.claimed += claimed
                batch.ready += ready
                if arrival is not None:
                    self._arrived(arrival)
                if self._committer is not None:
                    me.acquire()
                    batch.waiters.append(me)
                else:
                    self._committer = me
            if self._committer is not me:
                me.acquire()  # released when our batch is done, or is ours to commit
            if not batch.done:  # ours to commit
                self._commit_batch(batch, me)
        except BaseException:  # a signal (KeyboardInterrupt) in the main thread
            if batch is not None:
                self._stop_waiting(batch, me)
            raise
        if batch.error is not None:
            raise batch.error

    def _arrived(self, arrival: list[int]) -> None:
        """A producer counted in ``_arriving`` added its rows, or gave up (call with
        ``_batch_lock`` held): the last one lets a gathering committer go.  `arrival`
        is its token: 1 while counted, 0 once taken back, so it is taken back once."""
        if not arrival[0]:
            return
        self._arriving -= 1  # these two with no call between: no signal can part them
        arrival[0] = 0
        gatherer = self._gatherer
        if gatherer is not None and not self._arriving:
            self._gatherer = None
            gatherer.release()

    def _stop_waiting(self, batch: _Batch, me: _thread.LockType) -> None:
        """A producer in ``_commit`` leaves, interrupted at any point.  Its rows stay in
        the open batch for the next committer; a batch it took from there and did not
        commit fails (its producers get StoreError); the committer's role, if it held
        it, goes to a producer asleep on the open batch."""
        with self._batch_lock:
            if me in batch.waiters:  # asleep, never the committer
                batch.waiters.remove(me)
            if batch.done:  # committed: wake whoever the committer could not
                _wake_all(batch)
            if self._committer is not me:
                return
            self._gatherer = None  # only the committer gathers
            if self._batch is not batch and not batch.done:  # taken, never committed
                batch.error = StoreError(
                    "the commit of this task was interrupted by a signal in another "
                    "thread before it was stored: submit it again"
                )
                batch.done = True
                _wake_all(batch)
            self._hand_on()

    def _hand_on(self) -> None:
        """Pass the committer's role to a producer asleep on the open batch, or give it
        up when none is (call with ``_batch_lock`` held)."""
        waiting = self._batch.waiters
        if waiting:
            self._committer = waiter = waiting[-1]
            waiter.release()  # then unlisted: a signal between leaves it woken and listed
            waiting.pop()
        else:
            self._committer = None

    def _commit_batch(self, batch: _Batch, me: _thread.LockType) -> None:
        """Commit the open batch (`me` holds the committer's role), then pass the role
        on.  An interrupt outside the store's calls is ``_commit``'s to repair."""
        with self._batch_lock:
            if self._arriving:
                gatherer = self._gatherer = _thread.allocate_lock()
                gatherer.acquire()
            else:
                gatherer = None
        if gatherer is not None:
            gatherer.acquire(timeout=_GATHER_S)  # released by the last arriving producer
        with self._batch_lock:
            self._gatherer = None
            self._batch = _Batch()
        interrupted: BaseException | None = None
        try:
            if batch.claimed:
                self.store.enqueue(
                    batch.claimed, owner=self.owner, lease_until=time.time() + self.lease
                )
            if batch.ready:
                self.store.enqueue(batch.ready)
        except Exception as exc:
            batch.error = exc
        except BaseException as exc:  # a signal: only this thread raises it
            interrupted = exc
            batch.error = StoreError(
                f"the commit of this task was interrupted by {type(exc).__name__} in another "
                f"thread: it may or may not be stored"
            )
        with self._batch_lock:
            batch.done = True
            self._hand_on()
            _wake_all(batch)
        if interrupted is not None:
            raise interrupted

    def _start(
        self, claimed: Claimed, fn: Callable[..., Any] | None, progress: list[int] | None = None
    ) -> None:
        """Push a task this process holds onto the native ring (and count it in
        ``progress[0]``).  If that fails it gives the task back to the store (and sets
        ``progress[1]``) before it raises."""
        if fn is None:
            fn = resolve(claimed.name)
        try:
            if fn is None:
                raise LookupError(
                    f"no task named {claimed.name!r} in this worker: start it with the module "
                    f"that defines the task (cytask worker MODULE ...); apps sharing one store "
                    f"take each other's tasks: give each its own (a Redis prefix, an SQLite file)"
                )
            if claimed.codec != self.codec:
                raise ValueError(
                    f"task {claimed.id} was stored with serializer {claimed.codec!r}; this "
                    f"engine uses {self.codec!r} and will not decode it (pickle runs code: "
                    f"start the worker with serializer='pickle' only if you trust the store)"
                )
            args, kwargs = decode_args(claimed.codec, claimed.payload)
        except Exception as exc:
            run = _Run(self, claimed, _never, (), {})
            with self._lock:
                self._track(run)
                run.state = 2
            self._results.put(
                Finish(claimed.id, FAILED, error=encode_error(exc), attempt=claimed.attempts)
            )
            return
        run = _Run(self, claimed, fn, args, kwargs)
        try:  # from the first line: a signal anywhere leaves no lease held forever
            with self._lock:
                self._track(run)
            task = run.task
            options = None
            if task is not None and task.options.timeout:
                options = TaskOptions(task.name, claimed.priority, timeout=task.options.timeout)
            nh = self.engine._submit_handle(run, (), None, claimed.priority, options, False)
            run.native = nh
            if options is not None:
                nh.add_done_callback(run._native_done)
            if progress is not None:
                progress[0] += 1
        except BaseException:
            with self._lock:
                run.state = 2  # queued after all: its worker finds it ended
                self._inflight.pop(claimed.id, None)
                self._held -= 1
                if progress is not None:
                    progress[1] = 1  # the caller gives back none of it again
            with contextlib.suppress(Exception):
                self.store.release(self.owner, [claimed.id])
            raise

    def _track(self, run: _Run) -> None:
        """List `run` in ``_inflight`` (call with ``_lock`` held).  A run of an earlier
        attempt of the task may still be listed: this process lost its lease (stopped
        past it: SIGSTOP, a suspended VM, Redis away), the task went back to READY and
        came to this process again.  That run is no longer this process's: it leaves
        the count of leases held, and its end is dropped by the store (Finish.attempt)
        and left out here (``_write``)."""
        old = self._inflight.get(run.claimed.id)
        if old is not None and old is not run:
            self._held -= 1
        self._inflight[run.claimed.id] = run

    # -- the end of a run -----------------------------------------------------------------

    def _ended(self, run: _Run, value: Any, exc: BaseException | None) -> None:
        with self._lock:
            if run.state == 2:
                return  # a time limit ended it first: a late result is discarded
            run.state = 2
        run.args, run.kwargs = (), {}  # the native handle keeps the run: keep it small
        claimed = run.claimed
        if exc is None:
            try:
                data = encode_result(claimed.codec, value)
            except TypeError as bad:
                self._results.put(
                    Finish(claimed.id, FAILED, error=encode_error(bad), attempt=claimed.attempts)
                )
                return
            self._results.put(Finish(claimed.id, SUCCEEDED, result=data, attempt=claimed.attempts))
            return
        task = run.task
        if task is not None and not isinstance(exc, TaskTimeout):
            options = task.options
            tries = claimed.attempts - claimed.lost
            if tries <= options.retries and isinstance(exc, options.retry_on):
                from cytask._engine import _backoff

                at = time.time() + _backoff(options, tries)
                self._results.put(
                    Finish(
                        claimed.id, RETRYING, error=encode_error(exc), run_at=at,
                        attempt=claimed.attempts,
                    )
                )  # fmt: skip
                return
        self._results.put(
            Finish(claimed.id, FAILED, error=encode_error(exc), attempt=claimed.attempts)
        )

    def _lost(self, run: _Run) -> None:
        """An async task that shutdown() cancelled when its deadline passed: it goes
        back to the store as a task whose worker died does (another delivery, counted
        as lost), at once instead of when its lease expires.  Before, it failed for good
        with CancelledError, while a plain task cut off the same way ran again."""
        with self._lock:
            if run.state == 2:
                return
            run.state = 2
            if self._inflight.get(run.claimed.id) is run:  # else an older attempt: uncounted
                del self._inflight[run.claimed.id]
                self._held -= 1
        try:
            self.store.extend(self.owner, [run.claimed.id], 0.0)  # its lease ends now
            self.store.recover_expired(time.time())
        except Exception as exc:  # its lease expires: the next worker runs it then
            report_unraisable(exc, f"cytask could not give back task {run.claimed.id}")

    def _write_loop(self) -> None:
        self.engine._own_thread()  # the engine's work, not the application's (gil_share)
        try:
            self._write_all()
        finally:
            self.engine._own_thread(False)  # its ident may be reused by another thread

    def _write_all(self) -> None:
        """Commit results in batches.  Under a steady stream (the last commit less than
        ``_GATHER_RESULTS_S`` ago) a batch waits that long for more results: each
        commit takes the store's write lock, and one per task kept a producer in
        another process waiting for it (a web endpoint beside a worker process)."""
        results = self._results
        stop = False
        last = 0.0
        while not stop:
            item = results.get()
            batch: list[Finish] = []
            now = time.monotonic()
            gather_until = now + _GATHER_RESULTS_S if now - last < _GATHER_RESULTS_S else 0.0
            while True:
                if item is None:
                    stop = True
                else:
                    batch.append(item)
                if len(batch) >= 1024 or stop:
                    break
                try:
                    item = results.get_nowait()
                except queue.Empty:
                    left = gather_until - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        item = results.get(timeout=left)
                    except queue.Empty:
                        break
            if batch:
                self._write(batch)
                last = time.monotonic()

    def _write(self, batch: list[Finish]) -> None:
        recorded = self._commit_results(batch)
        if recorded < 0:
            return  # shutting down: the leases expire and the tasks run again
        retried = False
        with self._lock:
            for f in batch:
                run = self._inflight.get(f.id)
                # the end of an older attempt than the one listed leaves that one alone
                if run is not None and f.attempt in (0, run.claimed.attempts):
                    del self._inflight[f.id]
                    self._held -= 1
                retried = retried or f.state == RETRYING
            waiters = [self._waiters.pop(f.id, None) for f in batch] if self._waiters else []
        for events in waiters:
            for ev in events or ():
                ev.set()
        if self._callbacks:
            ended = [f.id for f in batch if f.state != RETRYING]
            if recorded < len(batch):  # some were dropped (a lost lease): not ended by us
                ended = [tid for tid in ended if self._ended_in_store(tid)]
            self._fire(ended)
        if not self._stopping.is_set():
            self._wake()  # capacity freed (and a retry may be due soon)

    def _commit_results(self, batch: list[Finish]) -> int:
        """``store.finish`` until the store takes the batch: how many it recorded, or -1
        when a shutdown gave up.  An outage (a transient StoreError) is waited out.  A
        store that answers but refuses is not retried with the whole batch forever:
        before, one result larger than Redis takes (proto-max-bulk-len) kept this
        process's writer retrying, and no later result of the process was ever
        committed.  The batch is halved until the refused end is alone; refused three
        times while a short end of the same task is taken, that task is recorded FAILED
        with the store's reason."""
        delay = 0.01
        refusals = 0
        while True:
            try:
                return self.store.finish(self.owner, batch, time.time())
            except Exception as exc:
                report_unraisable(exc, "cytask store writer (will retry)")
                if not (isinstance(exc, StoreError) and exc.transient):
                    if len(batch) > 1:
                        half = len(batch) // 2
                        first = self._commit_results(batch[:half])
                        second = self._commit_results(batch[half:]) if first >= 0 else -1
                        return -1 if second < 0 else first + second
                    refusals += 1
                    if refusals >= 3:
                        recorded = self._record_refused(batch[0], exc)
                        if recorded >= 0:
                            return recorded
                if self._stopping.is_set() and (
                    delay > 1.0 or time.monotonic() >= self._give_up_at
                ):
                    return -1
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _record_refused(self, f: Finish, exc: Exception) -> int:
        """Record the end the store refused as a failure naming the refusal (a retry
        stays a retry); -1 if the store refuses that too (it is down: retry)."""
        why = StoreError(
            f"the store refused to record the end of task {f.id} (the task ran): {exc}"
        )
        state = f.state if f.state in (RETRYING, CANCELLED) else FAILED
        short = Finish(f.id, state, error=encode_error(why), run_at=f.run_at, attempt=f.attempt)
        try:
            return self.store.finish(self.owner, [short], time.time())
        except Exception:
            return -1

    def _ended_in_store(self, task_id: str) -> bool:
        try:
            rec = self.store.get(task_id)
        except Exception:  # the watcher looks again in 50 ms
            return False
        return rec is None or rec.terminal

    # -- waiting, cancelling --------------------------------------------------------------

    def _wait(self, task_id: str, timeout: float | None) -> Any:
        """The task's record once it ended, or None if ``timeout`` passed first."""
        if timeout is not None:
            if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
                raise TypeError(
                    f"Expected a number or None for timeout, got {type(timeout).__name__}"
                )
            if timeout < 0:
                raise ValueError(f"Expected timeout >= 0 or None, got {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = 0.00025  # a worker elsewhere may answer within a millisecond
        began = time.monotonic()
        while True:
            ev = threading.Event()
            with self._lock:
                self._waiters.setdefault(task_id, []).append(ev)
            try:
                rec = self.store.get(task_id)
                if rec is None:
                    return _Expired()
                if rec.terminal:
                    return rec
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                ev.wait(poll if left is None else min(poll, left))
                if time.monotonic() - began > 0.002:  # the first 2 ms: every 0.25 ms
                    poll = min(poll * 2, 0.05)  # another process may finish it: look again
            finally:
                with self._lock:
                    events = self._waiters.get(task_id)
                    if events is not None and ev in events:
                        events.remove(ev)
                        if not events:
                            del self._waiters[task_id]

    def _add_callback(self, h: DurableHandle[Any], fn: Callable[[Any], object]) -> None:
        entry = (h, fn)
        with self._lock:
            self._callbacks.setdefault(h.task_id, []).append(entry)
            start = self._watcher is None
            if start:
                self._watcher = threading.Thread(
                    target=self._watch_loop, name=f"{self.engine.name}-store-watcher", daemon=True
                )
        if start:
            assert self._watcher is not None
            self._watcher.start()
        rec = self.store.get(h.task_id)
        if rec is None or rec.terminal:  # ended already: run it here, unless another did
            self._fire([h.task_id])

    def _drop_callback(self, task_id: str, fn: Callable[[Any], object]) -> None:
        """Forget `fn` for `task_id` (an await that was cancelled); no-op once fired."""
        with self._lock:
            entries = self._callbacks.get(task_id)
            if entries is None:
                return
            entries[:] = [e for e in entries if e[1] is not fn]
            if not entries:
                del self._callbacks[task_id]

    def _fire(self, ids: Iterable[str]) -> None:
        """Run the callbacks of ended tasks, each exactly once (whoever pops it runs it)."""
        with self._lock:
            due = [e for tid in ids for e in self._callbacks.pop(tid, ())]
        for h, fn in due:
            try:
                fn(h)
            except Exception as exc:
                report_unraisable(exc, f"done callback {fn!r} of task {h.task_id}", fn)

    def _watch_loop(self) -> None:
        """Done callbacks of tasks another process runs: look every 50 ms."""
        while not self._closed.wait(0.05):
            with self._lock:
                ids = list(self._callbacks)
            ended = []
            for tid in ids:
                try:
                    rec = self.store.get(tid)
                except Exception:
                    continue
                if rec is None or rec.terminal:
                    ended.append(tid)
            if ended:
                self._fire(ended)
        with self._lock:
            self._watcher = None

    def _cancel(self, task_id: str) -> bool:
        if self.store.cancel(task_id, time.time()):
            return True
        run = self._inflight.get(task_id)
        if run is None:  # running elsewhere (or ended): its worker tells the task
            self.store.request_cancel(task_id)
            return False
        with self._lock:
            if run.state != 0:
                if run.state == 1 and run.native is not None:
                    run.native._request_cancel()  # running here: current_task().cancel_requested
                return False
            run.state = 2
        if run.native is not None:
            run.native.cancel()
        self._results.put(Finish(task_id, CANCELLED, attempt=run.claimed.attempts))
        return True

    def get(self, task_id: object) -> DurableHandle[Any] | None:
        if not isinstance(task_id, str):
            return None
        rec = self.store.get(task_id)
        return None if rec is None else DurableHandle(self, task_id, rec.name)

    def dead_letters(self, limit: int) -> list[DurableHandle[Any]]:
        return [DurableHandle(self, rec.id, rec.name) for rec in self.store.dead(limit)]

    def requeue(self, task_id: str) -> bool:
        if not self.store.requeue(task_id):
            return False
        self._wake()  # READY again: this process may run it
        return True

    # -- periodic schedules: one run per tick across the store's processes --------------

    def next_tick(self, p: Periodic) -> tuple[float, int]:
        """The next due time of ``p`` on the wall clock (monotonic deadline, tick in ms).

        Interval schedules are aligned to multiples of the interval since the epoch, so
        every process computes the same ticks; cron ticks are the cron's own times.
        """
        wall, mono = time.time(), time.monotonic()
        if p.cron is not None:
            due = p.cron.next_timestamp(wall)
        else:
            assert p.interval is not None
            due = (math.floor(wall / p.interval) + 1) * p.interval
        return mono + (due - wall), round(due * 1000)

    def claim_tick(self, p: Periodic, tick: int) -> bool:
        key = getattr(p, "_tick_key", None)
        if key is None:
            fn = p._fn
            name = self._task_name(fn) if isinstance(fn, Task) else name_for(fn)
            what = f"cron {p.cron.expression}" if p.cron is not None else f"every {p.interval}"
            args = encode_args(self.codec, p._args, p._kwargs, fn)
            import hashlib  # here: it costs a worker's start 3 ms

            digest = hashlib.sha1(args if isinstance(args, bytes) else args.encode()).hexdigest()
            key = p._tick_key = f"{name} {what} {digest[:16]}"  # type: ignore[attr-defined]
        return self.store.claim_tick(key, tick)

    # -- the feeder -----------------------------------------------------------------------

    def _wake(self) -> None:
        if self._sleeping:
            self._ring()

    def _ring(self) -> None:
        # never write to a closed pipe's number: the OS hands it to the next file
        # opened (an SQLite file, say), and the byte would land in it
        with self._fd_lock:
            if self._wake_w >= 0:
                with contextlib.suppress(BlockingIOError, OSError):
                    os.write(self._wake_w, b"x")

    def _feed_loop(self) -> None:
        self.engine._own_thread()  # the engine's work, not the application's (gil_share)
        try:
            while not self._stopping.is_set():
                try:
                    self._feed()
                except Exception as exc:  # a locked or full store: report, wait, go on
                    report_unraisable(exc, "cytask store feeder (will retry)")
                    self._stopping.wait(0.5)
        finally:
            self.engine._own_thread(False)  # its ident may be reused by another thread

    def _feed(self) -> None:
        store = self.store
        # lease >= MIN_LEASE_S: at most 30 times a second; at least once a minute, also
        # with a lease of hours: other workers' lapsed leases are recovered, old results
        # expired, and the feeder's sleep stays in range (lease=1e11: select() overflowed
        # time_t, and the feeder failed every 0.5 s, reporting it)
        maint_every = min(self.lease / 3, _MAINTAIN_S)
        next_maint = 0.0
        cancels_every = min(maint_every, _CANCEL_LOOK_S)
        next_cancels = 0.0
        next_due: float | None = 0.0
        look = True  # claim at once on start: the store may hold work
        last_claim = 0.0  # time.monotonic() of the last claim that left work behind
        while not self._stopping.is_set():
            # the rounds on the monotonic clock: on the wall clock, one stepped back an
            # hour (NTP, date -s) held off extending this process's leases for an hour,
            # and other workers ran its running tasks again once they lapsed
            now, mono = time.time(), time.monotonic()
            if mono >= next_maint:
                next_maint = mono + maint_every
                try:
                    self._maintain(now)
                except Exception as exc:
                    report_unraisable(exc, "cytask store maintenance (will retry)")
                look = True
            if mono >= next_cancels:
                next_cancels = mono + cancels_every
                try:
                    self._pass_cancel_requests()
                except Exception as exc:
                    report_unraisable(exc, "cytask store cancel requests (will retry)")
            if next_due is not None and next_due <= now:
                with contextlib.suppress(Exception):
                    if store.promote_due(now):
                        look = True
                    next_due = store.next_due()
            got = 0
            if look or store.changed():
                look = False
                # a steady trickle: claim at most once per _GATHER_CLAIMS_S, so that a
                # claim takes several tasks (each claim takes the store's write lock)
                since = time.monotonic() - last_claim
                if since < _GATHER_CLAIMS_S and self._stopping.wait(_GATHER_CLAIMS_S - since):
                    break
                last_claim = time.monotonic()
                with self._lock:
                    room = self._claim_cap() - self._held
                    n = min(room, 256)
                    self._held += max(n, 0)
                if n > 0:
                    try:
                        claimed = store.claim(self.owner, n, time.time() + self.lease)
                    except Exception as exc:
                        claimed = []
                        report_unraisable(exc, "cytask store claim (will retry)")
                    got = len(claimed)
                    with self._lock:
                        self._held -= n - got
                    for c in claimed:
                        try:
                            self._start(c, None)
                        except Exception as exc:
                            report_unraisable(exc, f"cytask could not queue task {c.id}")
                    if got == n:
                        look = True  # maybe more
                        last_claim = 0.0  # a backlog: claim on at once
                        continue
                    with contextlib.suppress(Exception):
                        next_due = store.next_due()
                elif n <= 0:
                    look = True  # full: look again once a result frees room
            wait = next_maint - time.monotonic()
            if self._inflight:  # idle, it sleeps until work or maintenance is due
                wait = min(wait, next_cancels - time.monotonic())
            if next_due is not None:
                wait = min(wait, next_due - time.time())
            if self._sleep(max(0.0, wait)):
                look = True

    def _sleep(self, timeout: float) -> bool:
        """Sleep until woken, ``timeout`` passed or the store's watch fires; True if
        the watch brought news (another process committed)."""
        self._sleeping = True
        try:
            if self._stopping.is_set():
                return False
            fds = [self._wake_r]
            if self._watch.fd >= 0:
                fds.append(self._watch.fd)
            else:
                timeout = min(timeout, 0.05)  # no inotify: look at data_version 20 times/s
            ready, _, _ = select.select(fds, [], [], timeout)
            if self._wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            return self._watch.fd in ready and self._watch.drain()
        finally:
            self._sleeping = False

    def _ran_for(self, seconds: float) -> None:
        last = self._task_s  # a lost update between workers only blurs the average
        self._task_s = seconds if last is None else last + (seconds - last) / 16

    def _claim_cap(self) -> int:
        """How many tasks the feeder may hold.  Short tasks need a deep queue (one
        claim per round trip feeds the workers for a while); long ones must not sit
        in this process while another worker process idles, so until tasks are seen
        to be short (< 2 ms) it holds two per worker."""
        if self._task_s is not None and self._task_s < _SHORT_TASK_S:
            return self.max_inflight
        return min(self.max_inflight, 2 * self.engine.max_workers)

    def _pass_cancel_requests(self) -> None:
        """Tell this process's running tasks that another process asked to cancel them."""
        with self._lock:
            if not any(run.state == 1 for run in self._inflight.values()):
                return
        for task_id in self.store.cancel_requests(self.owner):
            run = self._inflight.get(task_id)
            if run is not None and run.state == 1 and run.native is not None:
                run.native._request_cancel()

    def _maintain(self, now: float) -> None:
        store = self.store
        # extend first: a process that was stopped past its leases (SIGSTOP, a suspended
        # VM, a long outage of Redis) and finds them still its own (no other process
        # recovered them meanwhile) keeps them, rather than recovering its own running
        # tasks, running them again and counting them lost
        with self._lock:
            held = [run for run in self._inflight.values() if run.state != 2]
        if held:
            kept = store.extend(self.owner, [r.claimed.id for r in held], now + self.lease)
            if kept < len(held):  # some were taken from this process: which?
                self._drop_lost(held)
        store.recover_expired(now)
        if self.result_ttl is not None:
            store.expire(now - self.result_ttl)

    def _drop_lost(self, runs: list[_Run]) -> None:
        """Some leases could not be extended: another process recovered those tasks
        (this one was stopped past them) and may run them now, under a valid lease.
        Runs not started here never start (before, a worker resumed after SIGSTOP ran
        the tasks it had claimed ahead beside their new owner); running ones are asked
        to stop (``cancel_requested``): their end will be dropped."""
        for run in runs:
            rec = self.store.get(run.claimed.id)
            if rec is not None and (
                rec.state == RUNNING
                and rec.owner == self.owner
                and rec.attempts == run.claimed.attempts
            ):
                continue  # still ours
            with self._lock:
                state = run.state
                if state == 0:
                    run.state = 2  # its __call__ returns at once if a worker pops it
                    if self._inflight.get(run.claimed.id) is run:
                        del self._inflight[run.claimed.id]
                        self._held -= 1
            if run.native is None:
                continue
            if state == 0:
                run.native.cancel()  # out of the native ring
            elif state == 1:
                run.native._request_cancel()

    # -- fork ---------------------------------------------------------------------------

    def after_fork(self) -> DurableRuntime:
        """In a fork() child: a runtime of its own on the same store.

        SQLite connections must not cross a fork, and the feeder and writer threads
        did not: the parent's objects are left alone (never closed here, which could
        disturb the parent's locks).  The child gets a new owner id; what the parent
        claimed stays the parent's.  After shutdown the child's runtime only reads.
        """
        self._abandoned = (self.store, self._wake_r, self._wake_w, self._watch)
        store = self.store.reopen()  # its options too, not only its URL
        rt = DurableRuntime(
            self.engine,
            store,
            self.codec,
            self.lease,
            self.consume and not self.engine._shut_down,
            self.result_ttl,
        )
        rt._names = dict(self._names)
        return rt

    # -- stopping -----------------------------------------------------------------------

    def stop_claiming(self, deadline: float | None = None) -> None:
        """Claim nothing more (shutdown began); submits now raise EngineClosed.  The
        tasks this process holds but has not started go back to the store at once,
        for other workers (or this one after a restart): a shutdown drains only the
        running ones, as Celery's warm shutdown returns its prefetched tasks.

        ``deadline`` (monotonic, the shutdown's): store calls stop waiting for an
        unreachable Redis then.  Before, a SIGTERM'd worker with Redis down waited
        ``retry_for`` per call, about 8 calls of the result writer (forever with
        retry_for=inf) past ``--drain-timeout``; its leases bring its tasks back."""
        if deadline is not None:
            self._give_up_at = min(self._give_up_at, deadline)
            self.store.retry_until(self._give_up_at)
        self._stopping.set()
        self._ring()
        if self._feeder is not None and threading.current_thread() is not self._feeder:
            self._feeder.join()
        self._stop_loop_commits()
        self._give_back_unstarted()

    def _give_back_unstarted(self) -> None:
        with self._lock:
            unstarted = [run for run in self._inflight.values() if run.state == 0]
            for run in unstarted:
                run.state = 2  # its __call__ now returns at once, if a worker still pops it
        if not unstarted:
            return
        for run in unstarted:
            if run.native is not None:
                run.native.cancel()  # out of the native ring
        ids = [run.claimed.id for run in unstarted]
        try:
            self.store.release(self.owner, ids)
        except Exception as exc:  # Redis away: their leases expire, others run them
            report_unraisable(exc, "cytask could not give back unstarted tasks")
        with self._lock:
            for task_id in ids:
                if self._inflight.pop(task_id, None) is not None:
                    self._held -= 1

    def close(self, deadline: float | None = None) -> None:
        """After the workers stopped: commit the last results, give back tasks never
        started (waiting for an unreachable store until ``deadline`` at most)."""
        self.stop_claiming(deadline)
        if self._writer is not None:
            self._results.put(None)
            self._writer.join()
            self._writer = None
        with self._lock:
            unstarted = [tid for tid, run in self._inflight.items() if run.state == 0]
        if unstarted:
            with contextlib.suppress(Exception):
                self.store.release(self.owner, unstarted)
        self._closed.set()
        self.store.retry_until(math.inf)  # reads after shutdown wait as configured
        with self._fd_lock:
            self._watch.close()
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
        # the store stays open for reading: handles still answer after shutdown


class _LoopBatch:
    """The rows of the requests one event loop served in one turn (``asubmit``)."""

    __slots__ = ("dones", "ended", "error", "loop", "rows", "taken")

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.rows: list[tuple[NewTask, Callable[..., Any]]] = []
        self.dones: list[Any] = []  # the requests' futures (on `loop`), one per row
        self.taken = False  # taken by the commit thread (under _aio_lock)
        self.ended = False  # its requests' wake-up is scheduled (_end_batch)
        self.error: BaseException | None = None  # why it was not committed, set before


def _end_batch(lb: _LoopBatch, error: BaseException | None) -> None:
    """Wake the requests of `lb` on their loop: each gets its handle, or `error`.  From
    any thread; a loop closed meanwhile took its requests with it.  The wake-up is
    scheduled twice: a signal at the first instruction of one (where a callback cannot
    repair anything) leaves the other, and one that wakes nobody costs a few us."""
    lb.error = error
    lb.ended = True  # then scheduled: a signal after the call leaves it ended once
    try:
        lb.loop.call_soon_threadsafe(_wake_requests, lb)
        lb.loop.call_soon_threadsafe(_wake_requests, lb)
    except RuntimeError:  # the loop is closed
        pass


def _wake_requests(lb: _LoopBatch) -> None:
    """On the batch's loop: wake each request still waiting (one cancelled meanwhile
    is skipped, here on its own loop's thread, so it cannot slip in between)."""
    for done in lb.dones:
        if not done.done():
            done.set_result(None)


def _as_store_error(exc: BaseException, when: str) -> BaseException:
    """`exc` for the requests of a loop batch: a signal's becomes a StoreError."""
    if isinstance(exc, Exception):
        return exc
    return StoreError(f"the commit of this task was interrupted by {type(exc).__name__} {when}")


def _commit_loop_batches(ref: weakref.ReferenceType[DurableRuntime], wake: Any) -> None:
    """The commit thread of ``asubmit`` (see ``_flush_loop_batch``).  Between batches
    it holds its runtime weakly: an engine dropped without shutdown() is collected."""
    rt = ref()
    if rt is None:
        return
    engine = weakref.ref(rt.engine)
    rt.engine._own_thread()  # the engine's work, not the application's (gil_share)
    try:
        woken = True
        while rt is not None:
            batches = rt._take_loop_batches(woken)
            if batches is None:
                return
            if batches:
                rt._commit_loop_batches(batches)
            batches = rt = None  # the engine may be collected while we wait
            woken = wake.acquire(timeout=_AIO_IDLE_S)
            rt = ref()
    finally:
        eng = engine()
        if eng is not None:
            eng._own_thread(False)  # its ident may be reused by another thread


class _Batch:
    __slots__ = ("claimed", "done", "error", "ready", "waiters")

    def __init__(self) -> None:
        self.claimed: list[NewTask] = []
        self.ready: list[NewTask] = []
        self.waiters: list[_thread.LockType] = []  # held locks of producers asleep on it
        self.done = False
        self.error: BaseException | None = None


def _wake_all(batch: _Batch) -> None:
    """Wake the producers asleep on a committed batch (call with ``_batch_lock`` held).
    Each is woken, then unlisted: one a signal left listed is woken again (harmless:
    its lock is its own, used once)."""
    waiters = batch.waiters
    while waiters:
        try:  # noqa: SIM105 (contextlib.suppress is Python code: a signal may raise in it)
            waiters[-1].release()
        except RuntimeError:  # woken already
            pass
        waiters.pop()


def _hostname() -> str:
    """The machine's name (os.uname: importing socket costs a worker's start 2 ms)."""
    try:
        return os.uname().nodename
    except AttributeError:  # no uname (Windows)
        import socket

        return socket.gethostname()


def _never() -> None:  # the callable of a task that failed before it could run
    return None


def _as_args(a: Any, i: int) -> tuple[Any, ...]:
    if isinstance(a, tuple):
        return a
    if isinstance(a, list):
        return tuple(a)
    raise TypeError(
        f"Expected a tuple of arguments for each item of iterable_of_args, got "
        f"{type(a).__name__} at index {i}: use ({a!r},) for a single argument"
    )
