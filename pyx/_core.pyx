# cython: freethreading_compatible = False
"""The native core of cytask: lock-free priority queues, GIL-free workers, task handles.

Layout of one engine (``Core``):

* four bounded MPMC rings (``ct_ring.h``), one per priority level, CRITICAL first.
  An item is either a ``TaskHandle`` pointer (a Python task; the ring owns one
  reference) or a tagged ``ct_ncall`` pointer (a native task; low bit set).
* worker threads are Python threads that keep one thread state for life and spend
  their time in a ``nogil`` loop: pop (strict priority), spin briefly, park on a
  futex (``ct_park.h``), or with ``Engine(linger=...)`` under a stream, nap instead
  (a timed sleep that producers need not wake).  The GIL is taken at exactly one marked point,
  ``_gil_section``, which runs a bounded batch of Python tasks and finishes the
  native tasks that ran since the last visit.  Native tasks run with no GIL.
* waiting on a handle is a futex wait on the engine's wait set, with the GIL
  released; completing a task wakes only when somebody waits.

The Python layer (``cytask._engine.Engine``) subclasses ``Core`` and overrides the
``_on_*`` hooks for retries, time limits and async tasks.

One extension module, one file per concern (as uvloop's loop.pyx): this file holds
the ``Core`` class (its fields, with the invariant of each, and the methods the
Python layer calls) and includes the rest, compiled together so every call between
them is a direct C call:

* ``core/declarations.pyx``: C declarations (atomics, rings, parking), constants,
  the per-worker slot, debug counters;
* ``core/checks.pyx``: argument checks that name the argument;
* ``core/stats.pyx``: per-worker accounting, the latency histogram, ``stats()``;
* ``core/handle.pyx``: ``TaskOptions`` and ``TaskHandle`` (status, waiting,
  cancellation, completion);
* ``core/rings.pyx``: submission, the priority rings, waiting for space, draining;
* ``core/workers.pyx``: the worker loop, spinning and parking, stand-ins, retiring,
  stuck workers, the fork reset;
* ``core/dispatch.pyx``: running Python tasks under the GIL and sharing it with the
  application's threads (yield points, the ``gil_share`` governor), retries;
* ``core/native.pyx``: finishing native (compiled) tasks, their Python fallback.
"""

cimport cython
from cpython.exc cimport PyErr_CheckSignals
from cpython.object cimport PyObject
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.ref cimport Py_DECREF, Py_INCREF
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport calloc, free, malloc
from cpython.version cimport PY_VERSION_HEX
from libc.string cimport memcpy, memset

import _thread
import os
import sys
import threading

from sys import _current_frames

include "core/declarations.pyx"
include "core/checks.pyx"
include "core/stats.pyx"
include "core/handle.pyx"


# ---------------------------------------------------------------------------
# The engine core

cdef class Core:
    """Queues and workers.  Subclassed by ``cytask.Engine``; not used directly."""

    cdef ct_ring _rings[N_LEVELS]
    cdef ct_parker _parker
    # threads blocked in TaskHandle.result() wait here (see ct_park.h)
    cdef ct_waitset _done
    # native calls that ran, with no done-callback: their handles' bookkeeping (drop
    # the queue's reference) left to the next thread that holds the GIL: workers push
    # whole chains, _drain_finished takes them all (ct_native.h states the protocol)
    cdef ct_finished _finished
    # producers blocked on a full ring wait here; consumers notify after a pop.
    # `waiters` counts producers inside _wait_for_space: += under the GIL right after
    # the failed push, -= when they leave (SEQ_CST); stopping workers do not exit while
    # it is > 0, so a task accepted before shutdown is still drained (see _drained)
    cdef ct_waitset _space
    # 1 once shutdown cancels queued tasks (cancel_pending, or its timeout passed):
    # stored SEQ_CST (with _abort_why, under the GIL, before it) by
    # _abort_space_waiters, read by producers before each push and after any push
    cdef int32_t _space_abort
    cdef str _abort_why
    # markers of main-thread producers running signal handlers (_space_check_signals)
    cdef list _signal_producers
    # the auto-scaler parks here while there is nothing to grow for; `waiters` is 1
    # while it sleeps, and the first producer that queues work with no idle worker
    # exchanges it to 0 and wakes it (one wake per sleep)
    cdef ct_waitset _grower
    # bumped by every worker thread as it exits; shutdown waits on it
    cdef ct_waitset _exited
    cdef ct_worker *_workers
    # number of live worker threads: += under the GIL at spawn, -= by a retiring
    # worker without the GIL (SEQ_CST both)
    cdef int32_t _live_workers
    # surplus workers asked to retire (a stand-in after its wait, a surplus
    # replacement): CAS -1 by a worker whose park timed out, which then exits, or by
    # _lend_slot, which keeps the surplus worker as a stand-in (SEQ_CST).  Nobody is
    # woken for it: a busy worker never retires for it, an idle one after
    # worker_idle_timeout, so the next wait finds the stand-in still there.
    cdef int32_t _surplus
    # workers outside the base pool: those lending their slot (blocked on their own
    # engine, a stand-in runs for each) plus _surplus.  Idle retirement keeps
    # _live_workers - _reserved >= _min_workers, so a stand-in that idles while its
    # lender still waits never takes the last runnable worker with it.  += / -= under
    # the GIL by spawn, lend and return; -= by a worker leaving as surplus (SEQ_CST)
    cdef int32_t _reserved
    # 1 once shutdown began: workers exit when they find every ring empty
    cdef int32_t _stopping
    # Engine(linger=...): an idle worker that took an item less than this long ago
    # naps this long (a timed sleep nobody needs to wake) instead of parking, and
    # takes what came meanwhile in one go.  0: off.  Set before workers start.
    cdef int64_t _linger_ns
    # workers napping now: += / -= by the nappers (SEQ_CST).  A producer that sees
    # it > 0 after its push (SEQ_CST) wakes nobody: a napper looks at the rings when
    # its nap ends, after its -= (the Dekker pair with ct_ring_push, as `sleepers`)
    cdef int32_t _napping
    # a worker parked this long leaves as surplus, or retires if the base pool
    # (_live_workers - _reserved) is above _min_workers
    cdef int64_t _idle_retire_ns
    cdef int32_t _min_workers
    cdef bint _closed
    cdef bint _rings_ready
    cdef int64_t _next_id
    cdef size_t _queue_size
    cdef double _submit_timeout       # < 0: wait for space without limit
    # tasks cancelled / failed outside a worker (timer, cancel()): under the GIL
    cdef int64_t _cancelled_count
    cdef int64_t _failed_outside
    # tasks that ended SUCCEEDED outside a worker (async tasks, on the loop thread):
    # under the GIL.  Workers count theirs in their own slot (no shared cache line).
    cdef int64_t _succeeded_outside
    cdef int64_t _started_ns
    # bounded result store: slot task_id % len holds the most recent handle
    cdef list _results
    cdef Py_ssize_t _results_len
    cdef list _current         # slot -> the TaskHandle that slot runs now, or None
    cdef object _spawn_lock
    # The GIL-share governor.  _gil_share: the most of the GIL that Python tasks
    # take while other threads want it (1.0: governor off, plain interpreter
    # switching); set once before workers start.
    cdef double _gil_share
    # until then (ct_now_ns) the workers are polite: some worker recently waited
    # for the GIL or was switched out at a yield point.  Relaxed: written by any
    # worker (the latest write wins, all writes are "now + window"), read by all.
    cdef int64_t _contended_until_ns
    # a fingerprint of where the application's threads (all but this engine's own)
    # are in their Python code, and the thread idents to leave out of it: while it
    # keeps changing, the application runs Python and wants the GIL.  Both under
    # the GIL.
    cdef uint64_t _app_fingerprint
    cdef set _own_threads
    # when a worker last took the fingerprint (under the GIL): one look per
    # APP_LOOK_NS serves all workers (many workers finishing I/O tasks would
    # otherwise look all the time)
    cdef int64_t _app_looked_ns
    # polite workers start no Python task before then: each slice of Python work
    # pushes it later by slice * (1 - share) / share (a relaxed store under the
    # GIL); a pause that finds the process quiet waives the debt (a relaxed store of
    # 0 without the GIL).  Read without the GIL.  The two writers may race: the lost
    # update moves one pause, which the next slice's charge corrects.
    cdef int64_t _polite_next_ns
    # (last, so that the fields above keep their places and cache lines)
    # Anti-starvation (aging), off when 0: written once by _init_core before any
    # worker starts, then only read.
    cdef int32_t _starvation_limit
    # _bypassed[lvl]: items served from levels above `lvl` while `lvl` was non-empty,
    # since `lvl` was last served (or found empty).  Relaxed atomic adds and stores by
    # every popping worker, no CAS: racing workers may each serve the aged level or
    # miss a count, so the limit holds to within the number of workers (a starved
    # level is still served, never lost).
    cdef int32_t _bypassed[N_LEVELS]
    # worker threads that could not be started (thread limit): under the GIL
    cdef int64_t _spawn_failures
    cdef set _spawn_warned     # the reasons already warned about, once each

    def __cinit__(self):
        self._workers = <ct_worker *>calloc(MAX_WORKER_SLOTS, sizeof(ct_worker))
        if self._workers == NULL:
            raise MemoryError()
        if ct_parker_init(&self._parker, MAX_WORKER_SLOTS, _max_spinning()) != 0:
            raise MemoryError()

    def __dealloc__(self):
        cdef int lvl
        cdef uint32_t seq
        if self._workers != NULL and _alive_workers(self):
            # Core.__del__ keeps a core for its live workers (Engine._orphaned); here it
            # did not run (a subclass's __del__ that skipped it).  Last resort: stop the
            # workers and wait, GIL released, until they left.  None is in a Python
            # section (one would hold a reference), so each leaves at once.
            _stop_workers_impl(self)
            with nogil:
                while _alive_workers(self):
                    seq = ct_load_u32(&self._exited.seq)
                    if _alive_workers(self):
                        ct_futex_wait(&self._exited.seq, seq, 10_000_000)
        if self._rings_ready:
            # none of its workers runs here (see above and Engine._orphaned)
            for lvl in range(N_LEVELS):
                _drain_ring_unlocked(self, lvl)
                ct_ring_free(&self._rings[lvl])
        free(self._workers)
        ct_parker_free(&self._parker)

    def __del__(self):
        """PEP 442: the last reference to this core went.  Its live workers use its
        memory without holding a reference (see _worker_loop): _orphaned keeps the
        core until they have left."""
        if not self._rings_ready or not _alive_workers(self):
            return
        if _is_finalizing():
            # interpreter teardown: a thread started now (a shutdown's) never runs, and
            # Python 3.11's Thread.start() waits for it for good; the workers die with
            # the process
            _keep_forever(self)
            return
        try:
            self._orphaned()
        except BaseException:
            # no thread to be had, or interpreter teardown (module globals gone):
            # keep the core for good rather than free memory its workers use
            _keep_forever(self)
            if not _is_finalizing():   # at teardown there is no one left to tell
                raise

    def _orphaned(self):
        """Keep the core for good and let its workers leave.  Engine overrides it:
        a shutdown(wait=False) that keeps the engine until its threads have left."""
        _keep_forever(self)

    def _init_core(self, queue_size, submit_timeout, max_results, min_workers,
                   double idle_retire_s, starvation_limit=None):
        cdef int lvl, k
        if self._rings_ready:
            raise RuntimeError("core already initialised")
        # checked here too, not only by Engine: these sizes become C allocations
        _check_c_int(queue_size, "queue_size", 2, MAX_QUEUE_SIZE)
        _check_c_int(max_results, "max_results", 0, MAX_RESULTS)
        _check_c_int(min_workers, "workers", 1, MAX_WORKERS)
        if starvation_limit is not None:
            self._starvation_limit = _check_c_int(
                starvation_limit, "starvation_limit", 1, INT32_LIMIT)
        if submit_timeout is not None:
            _check_seconds(submit_timeout, "submit_timeout")
        for lvl in range(N_LEVELS):
            if ct_ring_init(&self._rings[lvl], <size_t>queue_size) != 0:
                for k in range(lvl):
                    ct_ring_free(&self._rings[k])
                raise MemoryError(f"cannot allocate a queue of {queue_size} slots")
        self._rings_ready = True
        self._queue_size = ct_ring_capacity(&self._rings[0])
        # a wait past ~31 years is a wait without limit (and keeps the ns deadline in int64)
        self._submit_timeout = (
            -1.0 if submit_timeout is None or submit_timeout > 1e9 else submit_timeout)
        self._results_len = max_results
        self._results = [None] * max_results if max_results > 0 else None
        self._current = [None] * MAX_WORKER_SLOTS
        self._spawn_lock = threading.Lock()
        self._spawn_warned = set()
        self._signal_producers = []
        self._min_workers = min_workers
        # huge or inf: idle workers never retire (-1 parks without a time limit)
        self._idle_retire_ns = (<int64_t>(idle_retire_s * 1e9)
                                if idle_retire_s < FOREVER_S else -1)
        self._next_id = 1
        self._started_ns = ct_now_ns()
        self._gil_share = 1.0
        self._own_threads = set()

    def _own_thread(self, bint own=True, ident=None):
        """The calling thread (or thread `ident`) is part of the engine: its Python
        code is not the application's (see _app_moved).  own=False takes that back."""
        if ident is None:
            ident = _thread.get_ident()
        if own:
            self._own_threads.add(ident)
        else:
            self._own_threads.discard(ident)

    def _set_linger(self, double seconds):
        """Idle workers nap `seconds` after taking a task (see _linger_ns)."""
        if not (0.0 <= seconds <= 0.1):
            raise ValueError(f"Expected linger in [0, 0.1] seconds, got {seconds!r}")
        self._linger_ns = <int64_t>(seconds * 1e9)

    def _set_gil_share(self, double share):
        """Cap Python tasks at `share` of the GIL while other threads want it."""
        if not (0.0 < share <= 1.0):
            raise ValueError(f"Expected gil_share in (0, 1], got {share!r}")
        self._gil_share = share

    @property
    def queue_capacity(self):
        """Slots per priority level (queue_size rounded up to a power of two)."""
        return self._queue_size

    # -- submission -----------------------------------------------------------

    def submit(self, fn, /, *args, **kwargs):
        """Run ``fn(*args, **kwargs)`` on a worker at NORMAL priority; return its handle.

        Like ``concurrent.futures.Executor.submit``.
        """
        if type(fn) is _TaskType:   # an @task function keeps its options and compilation
            return self._submit_task(fn, args, kwargs, fn.options.priority, None)
        if not callable(fn):
            raise TypeError(f"Expected a callable for fn, got {type(fn).__name__}: {fn!r}")
        return _submit(self, fn, args, kwargs if kwargs else None, 2, None)

    def _submit_handle(self, fn, tuple args, kwargs, int priority, TaskOptions options,
                       bint scheduled):
        """Create a handle; queue it now, or leave it SCHEDULED for the engine's timer."""
        cdef TaskHandle h = _new_handle(self, fn, args, kwargs if kwargs else None,
                                        priority, options)
        if scheduled:
            h._status = ST_SCHEDULED
        else:
            _enqueue(self, h)
            _drain_if_finished(self)
        return h

    def _enqueue_handle(self, TaskHandle h, int32_t from_status, double wait=-1.0):
        """Queue a SCHEDULED/RETRYING (or PENDING) handle now. False if cancelled.

        With `wait` >= 0 (the timer, which must never block, and its hand-off): wait at
        most that long for space, then return None, the handle left PENDING for the
        caller to push later.  Otherwise wait as submit() does (submit_timeout, then
        the handle fails with QueueFull).
        """
        _check_ready(self)
        if h._core is not self:   # None: it ended (cancelled) and let go of its engine
            if h._core is None:
                return False
            raise ValueError(f"task {h.task_id} belongs to another engine")
        if not ct_cas_i32(h._status_ptr(), from_status, ST_PENDING):
            return False
        if not _enqueue(self, h, wait):
            return None
        return True

    def _poke_grower_now(self):
        """Wake the auto-scaler unconditionally (shutdown)."""
        ct_store_i32(&self._grower.waiters, 1)
        _poke_grower(self)

    def _grower_park(self, double timeout):
        """The auto-scaler sleeps here (GIL released) until work arrives with no
        idle worker, or `timeout` seconds pass."""
        _grower_park_impl(self, timeout, None)

    # -- native tasks -----------------------------------------------------------

    def submit_native(self, uintptr_t address, tuple args, bytes arg_kinds,
                      bytes result_kind, int priority=2, fallback=None):
        """Run the C function at `address` (``ct_native.h`` ABI) with no GIL.

        `arg_kinds` has one byte per argument: ``i`` int64, ``d`` double, ``b`` bool.
        `result_kind` is one of those bytes.  `fallback`, a Python callable taking the
        same arguments, runs a call the native code hands back (``CT_RC_PYTHON``).
        """
        cdef Py_ssize_t n = len(args)
        cdef Py_ssize_t i
        cdef char kind
        cdef ct_slot packed[CT_MAX_NATIVE_ARGS]
        if address == 0:
            raise ValueError("Expected a non-null function address for address, got 0")
        if n > CT_MAX_NATIVE_ARGS:
            raise ValueError(f"Expected at most {CT_MAX_NATIVE_ARGS} arguments, got {n}")
        if len(arg_kinds) != n:
            raise ValueError(f"Expected {n} arg_kinds for {n} arguments, got {arg_kinds!r}")
        if len(result_kind) != 1 or result_kind not in b"idb":
            raise ValueError(f"Expected b'i', b'd' or b'b' for result_kind, got {result_kind!r}")
        if priority < 0 or priority >= N_LEVELS:
            raise ValueError(f"Expected a Priority for priority, got {priority!r}")
        # pack (and validate) every argument before the task exists
        for i in range(n):
            kind = arg_kinds[i]
            a = args[i]
            if kind == b'd':
                if not isinstance(a, (int, float)) or isinstance(a, bool):
                    raise TypeError(f"Expected float for argument {i}, got {type(a).__name__}")
                packed[i].d = a
            elif kind == b'i' or kind == b'b':
                if not isinstance(a, int):
                    raise TypeError(f"Expected int for argument {i}, got {type(a).__name__}")
                packed[i].i = a
            else:
                raise ValueError(f"Expected b'i', b'd' or b'b' in arg_kinds, got {arg_kinds!r}")
        return _push_native(self, address, packed, n, args, result_kind[0], priority, fallback)

    def _submit_native_exact(self, tuple entry, tuple args, int priority):
        """``submit_native`` for a compiled task's checked entry, or None: run it in Python.

        `entry` is ``(address, arg_kinds, result_kind, guard, fallback)``, already
        validated (``CompiledTask.enable_fast``); `guard` is the address of the compiled
        code's globals cell (``compiler/_guard.py``: the address of the dict's version
        tag, the version verified, the next cell of the chain or 0), or 0.  Returns
        None, creating nothing, unless every argument is exactly its kind's type
        (``int`` within int64, ``float``, ``bool``) and the globals are unchanged since
        verified: ``CompiledTask.plan()``'s test, without a Python-level loop.
        """
        cdef uintptr_t address = entry[0]
        cdef bytes arg_kinds = entry[1]
        cdef char rkind = entry[2]
        cdef uintptr_t guard = entry[3]
        fallback = entry[4]
        cdef const uint64_t *cell
        cdef Py_ssize_t n = len(args)
        cdef Py_ssize_t i
        cdef char kind
        cdef int overflow
        cdef ct_slot packed[CT_MAX_NATIVE_ARGS]
        if n != len(arg_kinds):
            return None
        while guard != 0:   # the function's globals, then each module it reads
            cell = <const uint64_t *>guard
            if (<const uint64_t *><uintptr_t>cell[0])[0] != cell[1]:
                return None   # a dict changed: plan() verifies the frozen values again
            guard = <uintptr_t>cell[2]
        for i in range(n):
            kind = arg_kinds[i]
            a = <object>PyTuple_GET_ITEM(args, i)
            if kind == b'i':
                if not PyLong_CheckExact(a):
                    return None
                packed[i].i = PyLong_AsLongLongAndOverflow(a, &overflow)
                if overflow:
                    return None   # past int64
            elif kind == b'd':
                if not PyFloat_CheckExact(a):
                    return None
                packed[i].d = PyFloat_AS_DOUBLE(a)
            elif a is True:
                packed[i].i = 1
            elif a is False:
                packed[i].i = 0
            else:
                return None
        return _push_native(self, address, packed, n, args, rkind, priority, fallback)

    # -- workers ----------------------------------------------------------------

    def _spawn_worker(self):
        """Start one worker thread; returns its slot.  Raises RuntimeError when no
        thread can be started (every slot taken, or the system's thread limit)."""
        cdef int slot
        _check_ready(self)
        with self._spawn_lock:
            for slot in range(INLINE_SLOT):
                if not ct_load_i32(&self._workers[slot].alive):
                    break
            else:
                raise RuntimeError(
                    f"cytask runs at most {MAX_WORKERS} worker threads per engine")
            ct_store_i32(&self._workers[slot].abandoned, 0)
            self._workers[slot].spin_rounds = SPIN_MAX // 2
            self._workers[slot].lent = 0
            ct_store_i32(&self._workers[slot].alive, 1)
            ct_add_i32(&self._live_workers, 1)
        try:
            # a bare thread: threading.Thread.start() waits for the thread to run,
            # which makes growing by 200 workers take tens of milliseconds
            _thread.start_new_thread(_worker_entry, (<size_t><PyObject *>self, slot))
        except BaseException:
            ct_add_i32(&self._live_workers, -1)
            ct_store_i32(&self._workers[slot].alive, 0)
            raise
        return slot

    def _try_spawn_worker(self, str why):
        """Start one worker thread; False if none could be started.

        Used where a failure must degrade (fewer workers) rather than raise: the
        auto-scaler, stand-ins, time-limit replacements.  Each failure is counted
        (``stats().worker_spawn_failures``) and each reason is warned about once.
        """
        try:
            self._spawn_worker()
        except (RuntimeError, MemoryError) as exc:
            self._spawn_failed(exc, why)
            return False
        return True

    def _spawn_failed(self, BaseException exc, str why):
        """A worker thread could not be started: count it (stats), report the error to
        sys.unraisablehook and warn, both once per reason."""
        self._spawn_failures += 1
        if why in self._spawn_warned:
            return
        _report_unraisable(exc, f"starting a worker thread ({why})")
        self._warn_once(
            why,
            f"cytask engine {getattr(self, 'name', '')}: could not start a worker thread "
            f"({why}): {exc}; running with {ct_load_i32(&self._live_workers)} workers.  "
            f"Lower workers/max_workers or raise the system's thread limit; "
            f"stats().worker_spawn_failures counts these.")

    def _warn_once(self, str why, str message):
        """A RuntimeWarning, once per engine and reason; never raises."""
        if why in self._spawn_warned:
            return
        self._spawn_warned.add(why)
        try:
            import warnings
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        except Exception as warn_exc:   # warnings turned into errors: still degrade
            _report_unraisable(warn_exc, f"a warning about {why}")

    def _lend_slot(self):
        """The calling worker is about to block on this engine: let a stand-in run in
        its place until _return_slot().  Reuses an extra worker whose retirement is
        still pending before it starts a thread, so a task that polls (many short
        waits) keeps one stand-in, not one per call.  True if the calling thread is
        not one of this engine's workers, or a stand-in runs; False if none could be
        started (the caller then waits without one, or fails)."""
        cdef int slot = _own_slot(self)
        if slot < 0 or self._workers[slot].lent:
            return True
        if ct_load_i32(&self._stopping):
            return True   # shutting down: every worker leaves once the rings are empty
        if _cancel_retire(self):
            self._workers[slot].lent = 1   # a surplus worker stays on as the stand-in
            return True
        ct_add_i32(&self._reserved, 1)
        if self._try_spawn_worker("a stand-in for a worker that waits on its own engine"):
            self._workers[slot].lent = 1
            return True
        ct_add_i32(&self._reserved, -1)
        return False

    def _return_slot(self):
        """The wait is over: one worker (the stand-in, or whoever idles first) retires."""
        cdef int slot = _own_slot(self)
        if slot >= 0 and self._workers[slot].lent:
            self._workers[slot].lent = 0
            ct_add_i32(&self._surplus, 1)   # still reserved: now as surplus

    def _wait_workers_exit(self, timeout):
        """See _wait_workers_exit_impl (pyx/core/workers.pyx)."""
        return _wait_workers_exit_impl(self, timeout)

    def _run_inline(self, TaskHandle h):
        """Run a PENDING handle on the calling thread (eager mode), like a worker would."""
        _check_ready(self)
        if h._core is not self and h._core is not None:
            raise ValueError(f"task {h.task_id} belongs to another engine")
        if ct_load_i32(&h._status) != ST_PENDING:
            raise RuntimeError(f"task {h.task_id} is not pending")
        previous = _worker_slots.get(threading.get_ident())
        _worker_slots[threading.get_ident()] = (_address(self), INLINE_SLOT)
        outer = self._current[INLINE_SLOT]   # an eager task may submit eager tasks
        try:
            _run_python(self, &self._workers[INLINE_SLOT], INLINE_SLOT, h)
        finally:
            self._current[INLINE_SLOT] = outer
            if previous is None:
                del _worker_slots[threading.get_ident()]
            else:
                _worker_slots[threading.get_ident()] = previous

    def _replace_stuck_worker(self, TaskHandle h, int max_stuck):
        """See _replace_stuck_worker_impl (pyx/core/workers.pyx)."""
        return _replace_stuck_worker_impl(self, h, max_stuck)

    def _request_retire(self, int n):
        """Mark `n` workers surplus: as many idle workers exit after their idle time-out
        (worker_idle_timeout), unless _lend_slot reuses them as stand-ins first."""
        ct_add_i32(&self._reserved, n)
        ct_add_i32(&self._surplus, n)

    def _threads_alive(self):
        """Worker threads still running, stuck (abandoned) ones included."""
        return _alive_workers(self)

    @property
    def starvation_limit(self):
        """Pops a waiting level may be passed over before it is served; None: strict."""
        return self._starvation_limit or None

    # -- hooks the Python engine overrides ------------------------------------

    def _on_timed_start(self, TaskHandle h):
        """A task with a time limit starts an attempt; returns a token for _on_timed_end."""
        return None

    def _on_retry(self, TaskHandle h, BaseException exc):
        return False

    def _on_coroutine(self, TaskHandle h, coro):
        raise TypeError(
            f"task {h.task_id} returned a coroutine; async tasks need cytask.Engine")

    def _before_blocking_wait(self, TaskHandle h):
        pass

    def _after_blocking_wait(self, TaskHandle h):
        pass

    # -- accounting -----------------------------------------------------------

    def _core_stats(self):
        """See _core_stats_impl (pyx/core/stats.pyx)."""
        return _core_stats_impl(self)

    def _blocked_workers(self, int64_t min_age_ns):
        """How many workers have been inside their current task for >= min_age_ns."""
        cdef int i
        cdef int n = 0
        cdef int64_t now = ct_now_ns()
        cdef int64_t t
        for i in range(INLINE_SLOT):
            if ct_load_i32(&self._workers[i].alive):
                t = ct_load_i64(&self._workers[i].task_started_ns)
                if t != 0 and now - t >= min_age_ns:
                    n += 1
        return n

    def _idle_workers(self):
        return ct_load_i32(&self._parker.sleepers)

    def _napping_workers(self):
        return ct_load_i32(&self._napping)

    def _grower_asleep(self):
        """The auto-scaler sleeps until a submit finds no idle worker."""
        return ct_load_i32(&self._grower.waiters) == 1

    # -- lookup ---------------------------------------------------------------

    def get(self, task_id):
        """The handle of a recent task by id, or None once it left the result store."""
        if self._results is None or type(task_id) is bool or not isinstance(task_id, int) \
                or task_id <= 0:
            return None   # True == 1, but it is no task id
        h = self._results[task_id % self._results_len]
        if h is None or (<TaskHandle>h).task_id != task_id:
            return None
        return h

    def _sweep_results(self, double ttl):
        """Drop finished handles older than `ttl` s from the store; returns how many."""
        cdef int64_t cutoff
        cdef Py_ssize_t i
        cdef int n = 0
        cdef TaskHandle h
        if self._results is None or not (ttl < FOREVER_S):
            return 0   # nothing can be that old
        cutoff = ct_now_ns() - <int64_t>(ttl * 1e9)
        for i in range(self._results_len):
            obj = self._results[i]
            if obj is None:
                continue
            h = <TaskHandle>obj
            if h._finished_ns != 0 and h._finished_ns < cutoff:
                self._results[i] = None
                n += 1
        return n

    # -- shutdown -------------------------------------------------------------

    def _close(self):
        """No more submissions."""
        self._closed = True

    def _abort_space_waiters(self, str why):
        """Shutdown cancels what is queued: producers blocked on a full level stop
        waiting and cancel their task with `why`; one whose push landed after the rings
        were emptied empties them again (see _enqueue).  Final for this engine."""
        self._abort_why = why
        ct_store_i32(&self._space_abort, 1)
        ct_add_i32(<int32_t *>&self._space.seq, 1)
        ct_futex_wake_all(&self._space.seq)

    def _stop_workers(self):
        """Workers exit once every ring is empty."""
        _stop_workers_impl(self)

    def _cancel_queued(self, str why):
        """Pop every queued task and cancel it; returns how many were cancelled."""
        cdef int lvl
        cdef int n = 0
        if not self._rings_ready:
            return 0
        for lvl in range(N_LEVELS):
            n += _drain_ring(self, lvl, why)
        return n

    # -- fork -------------------------------------------------------------------

    def _reset_after_fork(self, str why):
        """See _reset_after_fork_impl (pyx/core/workers.pyx)."""
        return _reset_after_fork_impl(self, why)

    def _queued(self):
        return sum(ct_ring_size(&self._rings[i]) for i in range(N_LEVELS))

    def _live(self):
        return ct_load_i32(&self._live_workers)


# the engine's machinery, by concern (module-level functions taking the Core)
include "core/rings.pyx"
include "core/workers.pyx"
include "core/dispatch.pyx"
include "core/native.pyx"


def _max_spinning():
    """Workers allowed to spin at once: half the cores this process may run on."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


cdef object _grower_park_impl(Core self, double timeout, stopped):
    """`stopped()` (or None) is asked once the caller counts as a waiter and has read
    the sequence: a stop that sets it and then pokes (Supervisor.stop) is seen here,
    or its poke changes the sequence before the wait; never missed."""
    cdef uint32_t s
    cdef int64_t t = <int64_t>(timeout * 1e9) if timeout < FOREVER_S else -1
    ct_store_i32(&self._grower.waiters, 1)
    s = ct_load_u32(&self._grower.seq)
    try:
        if stopped is not None and stopped():
            return
        with nogil:
            if _all_empty(self) or ct_load_i32(&self._parker.sleepers):
                ct_futex_wait(&self._grower.seq, s, t)
    finally:
        ct_store_i32(&self._grower.waiters, 0)


def grower_park(size_t core, double timeout, stopped=None):
    """``Core._grower_park`` of the core at address `core`, holding no reference to
    it: the auto-scaler's sleep must not keep a dropped engine alive (the core stays
    alive meanwhile: see ``cytask._autoscale.Supervisor._run``).  Returns at once
    if `stopped()` is true (see _grower_park_impl)."""
    _grower_park_impl(<Core><PyObject *>core, timeout, stopped)


# cores dropped with live workers that could not be shut down (see Core.__del__): a C
# static, not a module global, so that it is there during interpreter teardown too
cdef list _kept_forever = []
cdef object _is_finalizing = sys.is_finalizing   # kept: sys may be gone by then


cdef int _alive_workers(Core self) noexcept nogil:
    """Worker slots whose thread runs (or is about to), stuck ones included."""
    cdef int slot
    cdef int n = 0
    if self._workers == NULL:   # __cinit__ failed
        return 0
    for slot in range(INLINE_SLOT):
        n += ct_load_i32(&self._workers[slot].alive)
    return n


cdef void _stop_workers_impl(Core self) noexcept:
    cdef int slot
    ct_store_i32(&self._stopping, 1)
    ct_parker_notify_all(&self._parker)
    for slot in range(INLINE_SLOT):   # nappers too: a nap lasts up to linger
        ct_store_u32(&self._workers[slot].nap, 1)
        if ct_load_i32(&self._workers[slot].alive):   # (one spawned later sees _stopping)
            ct_futex_wake_all(&self._workers[slot].nap)


cdef void _keep_forever(Core core) noexcept:
    if _alive_workers(core):
        _kept_forever.append(core)
        core._closed = True
        _stop_workers_impl(core)

# thread ident -> (address of its core, slot) for current_task(); written by workers
# under the GIL.  An address, not a reference: a worker does not keep its engine alive
# (see _worker_loop).  While the thread is one of the core's live workers (or runs an
# eager task inline, its caller holding the engine), the core is alive.
_worker_slots = {}


cdef inline size_t _address(Core core) noexcept:
    return <size_t><PyObject *>core


def current_handle():
    """The TaskHandle the calling worker thread runs now, or None."""
    entry = _worker_slots.get(threading.get_ident())
    if entry is None:
        return None
    return (<Core><PyObject *><size_t>entry[0])._current[entry[1]]


def _after_fork_in_child():
    """In a fork() child: only the calling thread exists (it is the main thread now)."""
    _set_main_thread()
    me = threading.get_ident()
    for ident in list(_worker_slots):
        if ident != me:
            del _worker_slots[ident]


def current_worker_core():
    """The Core whose worker is the calling thread, or None."""
    entry = _worker_slots.get(threading.get_ident())
    return None if entry is None else <Core><PyObject *><size_t>entry[0]


import types as _types
_CoroutineType = _types.CoroutineType

_engine_closed = None
_queue_full = None
_native_error_for = None
_TaskType = None


def _bind_task_type(task_type):
    """Called once by cytask's __init__: submit() recognises @task functions."""
    global _TaskType
    _TaskType = task_type


def _bind_errors(engine_closed, queue_full, native_error_for):
    global _engine_closed, _queue_full, _native_error_for
    _engine_closed = engine_closed
    _queue_full = queue_full
    _native_error_for = native_error_for
