# cython: freethreading_compatible = False
"""The native core of cytask: lock-free priority queues, GIL-free workers, task handles.

Layout of one engine (``Core``):

* four bounded MPMC rings (``ct_ring.h``), one per priority level, CRITICAL first.
  An item is either a ``TaskHandle`` pointer (a Python task; the ring owns one
  reference) or a tagged ``ct_ncall`` pointer (a native task; low bit set).
* worker threads are Python threads that keep one thread state for life and spend
  their time in a ``nogil`` loop: pop (strict priority), spin briefly, park on a
  futex (``ct_park.h``).  The GIL is taken at exactly one marked point,
  ``_gil_section``, which runs a bounded batch of Python tasks and finishes the
  native tasks that ran since the last visit.  Native tasks run with no GIL.
* waiting on a handle is a futex wait on the engine's wait set, with the GIL
  released; completing a task wakes only when somebody waits.

The Python layer (``cytask._engine.Engine``) subclasses ``Core`` and overrides the
``_on_*`` hooks for retries, time limits and async tasks.
"""

cimport cython
from cpython.exc cimport PyErr_CheckSignals
from cpython.object cimport PyObject
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.ref cimport Py_DECREF, Py_INCREF
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport calloc, free
from cpython.version cimport PY_VERSION_HEX
from libc.string cimport memcpy, memset

import _thread
import os
import sys
import threading

from sys import _current_frames

cdef extern from "Python.h":
    ctypedef struct PyFrameObject
    int PyFrame_GetLasti(PyFrameObject *frame)
    void PyObject_GC_Track(void *op)
    void PyObject_GC_UnTrack(void *op)
    int PyObject_GC_IsTracked(object op)

cdef extern from "ct_atomic.h":
    void ct_cpu_relax() noexcept nogil
    int32_t ct_load_i32(const int32_t *p) noexcept nogil
    void ct_store_i32(int32_t *p, int32_t v) noexcept nogil
    int32_t ct_xchg_i32(int32_t *p, int32_t v) noexcept nogil
    int32_t ct_add_i32(int32_t *p, int32_t v) noexcept nogil
    int64_t ct_load_i64(const int64_t *p) noexcept nogil
    void ct_store_i64(int64_t *p, int64_t v) noexcept nogil
    int64_t ct_add_i64(int64_t *p, int64_t v) noexcept nogil
    void ct_bump_i64(int64_t *p, int64_t v) noexcept nogil
    int ct_cas_i32(int32_t *p, int32_t expected, int32_t desired) noexcept nogil
    void CT_ASSERT(bint) noexcept nogil

cdef extern from "ct_ring.h":
    ctypedef struct ct_ring:
        pass
    int ct_ring_init(ct_ring *r, size_t capacity) noexcept nogil
    void ct_ring_free(ct_ring *r) noexcept nogil
    size_t ct_ring_capacity(const ct_ring *r) noexcept nogil
    int ct_ring_push(ct_ring *r, void *data) noexcept nogil
    void *ct_ring_pop(ct_ring *r) noexcept nogil
    size_t ct_ring_size(const ct_ring *r) noexcept nogil

cdef extern from "ct_park.h":
    enum:
        CT_PARK_WOKEN
    ctypedef struct ct_parker:
        int32_t lock
        int32_t sleepers
        int32_t wake_pending
        int32_t spinning
    ctypedef struct ct_waitset:
        uint32_t seq
        int32_t waiters
    int64_t ct_now_ns() noexcept nogil
    bint ct_futex_wait(uint32_t *addr, uint32_t expected, int64_t timeout_ns) noexcept nogil
    int ct_parker_init(ct_parker *p, int32_t capacity, int32_t max_spinning) noexcept nogil
    void ct_parker_free(ct_parker *p) noexcept nogil
    int ct_parker_spin_begin(ct_parker *p) noexcept nogil
    void ct_parker_spin_end(ct_parker *p) noexcept nogil
    void ct_parker_push(ct_parker *p, uint32_t *word) noexcept nogil
    int ct_parker_leave(ct_parker *p, uint32_t *word) noexcept nogil
    void ct_parker_sleep(uint32_t *word, int64_t timeout_ns) noexcept nogil
    void ct_parker_notify_one(ct_parker *p) noexcept nogil
    void ct_parker_notify_all(ct_parker *p) noexcept nogil
    void ct_futex_wake_all(uint32_t *addr) noexcept nogil
    void ct_waitset_notify(ct_waitset *w) noexcept nogil
    int ct_waitset_wait(ct_waitset *w, const int32_t *status, int32_t terminal_from,
                        int64_t deadline_ns) noexcept nogil
    uint32_t ct_load_u32 "ct_load_seqcst"(uint32_t *p) noexcept nogil

cdef extern from "ct_gil.h":
    int64_t ct_thread_cpu_ns() noexcept nogil
    int64_t ct_process_cpu_ns() noexcept nogil
    void ct_sleep_ns(int64_t ns) noexcept nogil
    uint64_t ct_fingerprint(uint64_t h, uint64_t v) noexcept nogil

cdef extern from "ct_native.h":
    enum:
        CT_MAX_NATIVE_ARGS
        CT_RC_OK
        CT_RC_PYTHON
    ctypedef union ct_slot:
        int64_t i
        double d
    ctypedef int32_t (*ct_native_fn)(const ct_slot *args, ct_slot *result) noexcept nogil
    ctypedef struct ct_ncall:
        PyObject *owner
        ct_native_fn fn
        int32_t status
        int32_t rc
        int32_t nargs
        ct_slot result
        ct_slot args[8]

cdef extern from *:
    """
    #ifndef CYTASK_DEBUG
    #define CYTASK_DEBUG 0
    #endif
    #define CT_DEBUG CYTASK_DEBUG
    #define CT_TAG_NATIVE ((uintptr_t)1)
    """
    const bint CT_DEBUG
    const uintptr_t CT_TAG_NATIVE


# ---------------------------------------------------------------------------
# Constants

cdef enum:
    N_LEVELS = 4
    BATCH_MAX = 256          # Python tasks run between two GIL yield points, at most
    NATIVE_DEFER_MAX = 256   # native tasks finished per GIL visit, at most
    HIST_BUCKETS = 256       # latency histogram: 4 sub-buckets per power of two (ns)
    MAX_WORKER_SLOTS = 1024
    INLINE_SLOT = MAX_WORKER_SLOTS - 1   # counters of tasks run inline (eager mode)
    # worker threads one engine can have at once (workers, auto-scaled, stand-ins,
    # replacements, stuck threads); Engine checks workers and max_workers against it
    MAX_WORKERS = INLINE_SLOT
    # each level's ring is allocated up front (16 bytes a slot): 4 x 256 MiB at most
    MAX_QUEUE_SIZE = 1 << 24
    # the result store is one list of this many slots, allocated up front (8 bytes each)
    MAX_RESULTS = 1 << 26

# Task status codes, in lifecycle order; everything >= ST_SUCCEEDED is terminal.
cdef enum:
    ST_PENDING = 0
    ST_SCHEDULED = 1
    ST_RUNNING = 2
    ST_RETRYING = 3
    ST_SUCCEEDED = 4
    ST_FAILED = 5
    ST_CANCELLED = 6

# the bounds Engine checks its arguments against, for its error messages
LIMITS = {"workers": MAX_WORKERS, "queue_size": MAX_QUEUE_SIZE, "max_results": MAX_RESULTS}

STATUS_NAMES = (
    "pending", "scheduled", "running", "retrying", "succeeded", "failed", "cancelled"
)

# A worker running Python tasks passes a GIL yield point (see _gil_yield) at least
# this often, and after at most BATCH_MAX tasks.
cdef int64_t BATCH_NS = 2_000_000
# Durations longer than this (~31 years, or inf) mean "no limit": converting them
# to nanoseconds would soon overflow int64_t (undefined in C).  Same bound as
# _wait_deadline's.
cdef double FOREVER_S = 1e9


cdef inline int64_t _deadline_ns(double seconds) noexcept nogil:
    """now + `seconds` as a ct_now_ns() deadline; -1 (none) for huge, inf or nan."""
    if not (seconds <= FOREVER_S):
        return -1
    return ct_now_ns() + <int64_t>(seconds * 1e9)


cdef int64_t NATIVE_FLUSH_NS = 1_000_000  # native completions wait this long at most
# Adaptive spinning before parking, per worker: a spin that found work doubles the
# next spin (up to SPIN_MAX rounds, ~40-80 us), one that ended in parking halves it
# (down to SPIN_MIN).  Bursty producers keep workers hot; an idle engine parks fast.
cdef int SPIN_MIN = 16
cdef int SPIN_MAX = 400
# The GIL-share governor (Engine(gil_share=...) < 1; see Core._gil_section): the
# workers stay polite this long after they last saw the application run Python
cdef int64_t CONTENDED_FOR_NS = 100_000_000
# the application's threads are looked at no more often than this, engine-wide
cdef int64_t APP_LOOK_NS = 1_000_000
# a polite worker gives the GIL back after a slice this long of Python tasks
cdef int64_t POLITE_SLICE_NS = 500_000
# a polite pause sleeps in steps this long, and ends early after a step in which
# the process used under 4% of one core: nobody else wanted the GIL then
cdef int64_t POLITE_STEP_NS = 200_000
# A blocking wait in the main thread looks at signals at least this often, so Ctrl-C
# raises KeyboardInterrupt promptly even when the signal landed on another thread (a
# signal delivered to the main thread itself interrupts the futex wait at once).
cdef int64_t SIGNAL_SLICE_NS = 50_000_000

# the thread that runs Python signal handlers; written under the GIL at import and in a
# forked child (threading makes the forking thread the child's main thread)
cdef unsigned long _main_thread_ident = 0


cdef inline bint _signals_here() noexcept:
    """True on the thread where signal handlers run: its waits must check signals."""
    return PyThread_get_thread_ident() == _main_thread_ident


def _set_main_thread():
    """Record the thread signal handlers run on (import, and after fork in the child)."""
    global _main_thread_ident
    _main_thread_ident = threading.main_thread().ident


_set_main_thread()


cdef inline int64_t _slice_end(int64_t deadline, bint signals) noexcept nogil:
    """The end of one wait slice: `deadline` (< 0: none), or sooner where signals count."""
    cdef int64_t end
    if not signals:
        return deadline
    end = ct_now_ns() + SIGNAL_SLICE_NS
    return end if deadline < 0 or end < deadline else deadline


# how a producer's wait for space in a full ring ended (Core._wait_for_space)
cdef enum:
    SPACE_WAIT = 0       # still waiting (a slice ended: look at signals)
    SPACE_PUSHED = 1     # the item is in the ring
    SPACE_TIMED_OUT = 2  # submit_timeout passed
    SPACE_ABORTED = 3    # shutdown cancels queued tasks (Core._abort_space_waiters)
    SPACE_STOPPED = 4    # a signal handler shut the engine down meanwhile


# ---------------------------------------------------------------------------
# Per-worker counters

cdef extern from *:
    int __builtin_clzll(unsigned long long) noexcept nogil


ctypedef struct ct_worker:
    # Every field is written only by the worker that owns the slot (relaxed atomics);
    # stats() and the supervisor read them as snapshots that may be slightly stale.
    int64_t processed        # tasks finished by this slot (all outcomes)
    int64_t failed           # tasks that ended FAILED on this slot
    int64_t succeeded        # tasks that ended SUCCEEDED on this slot
    int64_t busy_ns          # time spent running tasks
    int64_t task_started_ns  # start of the current task, 0 while not running one
    int64_t exec_ns_sum      # sum of task run times, for the average
    uint64_t hist[HIST_BUCKETS]  # task run times, log-scale buckets
    int32_t alive            # 1 while a thread runs this slot (written by it and by spawn)
    # 1 once the engine gave up on this slot's current task (time limit) and started a
    # replacement: written (SEQ_CST) under the GIL by _replace_stuck_worker, read by the
    # worker after its task returns, which then exits instead of taking more work
    int32_t abandoned
    int32_t spin_rounds      # adaptive spin length (only its worker touches it)
    # park word (ct_park.h): RUNNING/IDLE/WOKEN, written SEQ_CST under the parker's
    # lock by its worker and by wakers; the worker futex-sleeps on it while IDLE
    uint32_t park
    # 1 while this worker blocks on its own engine (a wait, a full ring) and a stand-in
    # holds its place: read and written only by its own thread, under the GIL
    int32_t lent
    char _pad[44]


cdef inline int hist_bucket(int64_t ns) noexcept nogil:
    """Bucket of a duration: 4 sub-buckets per power of two, so p99 is within ~19%."""
    cdef uint64_t v = <uint64_t>ns if ns > 0 else 1
    cdef int msb = 63 - __builtin_clzll(v)
    cdef int sub
    if msb < 2:
        return <int>v
    sub = <int>((v >> (msb - 2)) & 3)
    return min(msb * 4 + sub, HIST_BUCKETS - 1)


cdef inline double bucket_upper_ns(int b) noexcept nogil:
    cdef int msb = b // 4
    cdef int sub = b % 4
    if msb < 2:
        return <double>(b + 1)
    return <double>((<uint64_t>(4 + sub + 1)) << (msb - 2))


# ---------------------------------------------------------------------------
# Argument checks for values that end up in C fields (a bare OverflowError or a
# wrapped-around C int would name nothing, or index past an array)

cdef int INT32_LIMIT = 2147483647


cdef int _check_c_int(value, str name, int lo, int hi) except? -1:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Expected int for {name}, got {type(value).__name__}: {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"Expected {name} between {lo} and {hi}, got {value!r}")
    return value


cdef double _check_seconds(value, str name) except? -1.0:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"Expected int or float for {name}, got {type(value).__name__}: {value!r}")
    if not value >= 0:   # also NaN
        raise ValueError(f"Expected {name} >= 0, got {value!r}")
    try:
        return value
    except OverflowError:   # an int past the largest double
        raise ValueError(f"Expected {name} <= {sys.float_info.max:g}, got {value!r}") from None


cdef int64_t _wait_deadline(timeout) except? -2:
    """The futex deadline (ns) for a wait of `timeout` s: -1 waits without limit.

    Checked before anything else, so a bad timeout fails the same way whether or
    not the task is already done.
    """
    cdef double t
    if timeout is None:
        return -1
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(
            f"Expected int, float or None for timeout, got {type(timeout).__name__}: "
            f"{timeout!r}")
    if not timeout >= 0:   # also NaN
        raise ValueError(f"Expected timeout >= 0 or None, got {timeout!r}")
    if timeout > 1e9:      # ~31 years: past int64 nanoseconds soon after, so no limit at all
        return -1
    t = timeout
    return ct_now_ns() + <int64_t>(t * 1e9)


# ---------------------------------------------------------------------------
# Options attached to tasks declared with @task

@cython.final
cdef class TaskOptions:
    """Per-task policy shared by every submission of one ``@task`` function.

    Read by the worker on its hot path, so the fields are C fields; ``cytask``'s
    ``@task`` validates them before they get here.
    """

    cdef readonly object name
    cdef readonly int priority
    cdef readonly int retries
    cdef readonly double retry_backoff
    cdef readonly double retry_backoff_max
    cdef readonly bint retry_jitter
    cdef readonly tuple retry_on
    cdef readonly double timeout

    def __init__(self, name, priority=2, retries=0, retry_backoff=0.0,
                 retry_backoff_max=300.0, retry_jitter=True, retry_on=(), timeout=0.0):
        # Every field is checked here, not only by @task: a TaskOptions built by hand
        # must not reach the worker with a priority that indexes past the rings.
        if not isinstance(name, str):
            raise TypeError(f"Expected str for name, got {type(name).__name__}: {name!r}")
        self.priority = _check_c_int(priority, "priority", 0, N_LEVELS - 1)
        self.retries = _check_c_int(retries, "retries", 0, INT32_LIMIT)
        self.retry_backoff = _check_seconds(retry_backoff, "retry_backoff")
        self.retry_backoff_max = _check_seconds(retry_backoff_max, "retry_backoff_max")
        if not isinstance(retry_jitter, bool):
            raise TypeError(
                f"Expected bool for retry_jitter, got {type(retry_jitter).__name__}")
        if not isinstance(retry_on, tuple) or not all(
                isinstance(t, type) and issubclass(t, BaseException) for t in retry_on):
            raise TypeError(
                f"Expected a tuple of exception classes for retry_on, got {retry_on!r}")
        self.timeout = _check_seconds(timeout, "timeout")
        self.name = name
        self.retry_jitter = retry_jitter
        self.retry_on = retry_on

    def __repr__(self):
        return (f"TaskOptions(name={self.name!r}, priority={self.priority}, "
                f"retries={self.retries}, retry_backoff={self.retry_backoff}, "
                f"timeout={self.timeout})")


# ---------------------------------------------------------------------------
# Task handles

@cython.freelist(1024)
cdef class TaskHandle:
    """The submitter's view of one task: status, result, progress, cancellation.

    A handle is created at submit and kept by the queue until the task is done, then
    only by whoever still refers to it (the user, the engine's bounded result store).
    It holds no lock and no condition variable: waiting uses the engine's futex wait
    set, and the status field is the only word two threads race on.

    Garbage collection: handles are untracked by the cyclic GC at submit, so a
    million queued tasks cost the collector nothing.  That is safe because a handle
    can only be part of a cycle through what it references: while it is queued or
    running the queue (a C reference) keeps it alive anyway, and once it ends it drops
    its function, arguments, callbacks and engine, keeping only its result.  If that
    result is a GC-tracked object (it could point back at the handle), the handle is
    tracked again at that moment.
    """

    # Status of a Python task: SEQ_CST stores/CAS by the worker (running, done), by
    # cancel() and by the engine's timer (scheduled, retrying, timed out); waiters
    # read it without the GIL.  Native tasks keep theirs in _ncall.status instead.
    cdef int32_t _status
    cdef readonly int64_t task_id
    # Every field below except the status words is read and written under the GIL.
    # the engine, for waiting and accounting; dropped (None) once the task ended
    cdef Core _core
    # fn/args/kwargs: written at submit, read by the worker under the GIL, cleared
    # when the task ends so the handle does not keep the arguments alive.
    cdef object _fn
    cdef tuple _args
    cdef dict _kwargs
    # the result, or the exception for FAILED/CANCELLED: written once, before the
    # terminal status is stored; read only after a terminal status was seen.
    cdef object _value
    cdef ct_ncall *_ncall
    cdef char _result_kind
    cdef int _priority
    cdef readonly TaskOptions options
    cdef int _attempts
    cdef bint _cancel_requested
    cdef double _progress
    cdef object _progress_message
    cdef list _callbacks
    cdef int64_t _finished_ns
    cdef object __weakref__   # the timer refers to running tasks weakly

    def __cinit__(self):
        if CT_DEBUG:
            ct_add_i64(&_debug_counters[2], 1)

    def __init__(self, *args, **kwargs):
        # engines make handles with TaskHandle.__new__, which skips this
        raise TypeError(
            "TaskHandle cannot be created directly; Engine.submit() and Task.delay() "
            "return one")

    def __dealloc__(self):
        if self._ncall != NULL:
            free(self._ncall)
            self._ncall = NULL
        if CT_DEBUG:
            ct_add_i64(&_debug_counters[2], -1)

    def __repr__(self):
        return f"<TaskHandle {self.task_id} {self.status}>"

    # -- status ---------------------------------------------------------------

    cdef inline int32_t *_status_ptr(self) noexcept:
        if self._ncall != NULL:
            return &self._ncall.status
        return &self._status

    cdef inline int32_t _load_status(self) noexcept:
        return ct_load_i32(self._status_ptr())

    @property
    def status(self):
        """The task's ``TaskStatus`` now (it may change right after you read it)."""
        return _status_enum(self._load_status())

    @property
    def name(self):
        if self.options is not None:
            return self.options.name
        return getattr(self._fn, "__qualname__", None) if self._fn is not None else None

    @property
    def priority(self):
        return _priority_enum(self._priority)

    def done(self):
        """True once the task succeeded, failed or was cancelled."""
        return self._load_status() >= ST_SUCCEEDED

    def cancelled(self):
        return self._load_status() == ST_CANCELLED

    def running(self):
        return self._load_status() == ST_RUNNING

    @property
    def attempts(self):
        """How many times the task has started running (retries included)."""
        return self._attempts

    @property
    def attempt(self):
        """Alias of ``attempts`` for use through ``current_task()``: 1 on the first run."""
        return self._attempts

    @property
    def cancel_requested(self):
        """True once ``cancel()`` or a time limit asked this running task to stop.

        Python threads cannot be killed; long-running tasks should poll this.
        """
        return self._cancel_requested

    @property
    def progress(self):
        return self._progress

    @property
    def progress_message(self):
        return self._progress_message

    def set_progress(self, percent, message=None):
        """Report progress (0-100) from inside the task; visible on the handle at once."""
        cdef double p
        if isinstance(percent, bool) or not isinstance(percent, (int, float)):
            raise TypeError(f"Expected int or float for percent, got {type(percent).__name__}")
        p = percent
        if not (0.0 <= p <= 100.0):
            raise ValueError(f"Expected percent between 0 and 100, got {percent!r}")
        if message is not None and not isinstance(message, str):
            raise TypeError(f"Expected str or None for message, got {type(message).__name__}")
        self._progress = p
        if message is not None:
            self._progress_message = message

    # -- waiting --------------------------------------------------------------

    cdef int _wait(self, timeout) except -1:
        """Block (GIL released) until done; raise TimeoutError after `timeout` s."""
        cdef int64_t deadline = _wait_deadline(timeout)
        cdef int64_t end
        cdef int32_t *status = self._status_ptr()
        cdef int done = 0
        cdef bint signals
        cdef Core core = self._core   # our own reference: completion drops the field
        if ct_load_i32(status) >= ST_SUCCEEDED:
            return 0
        if core is None:
            raise RuntimeError(
                "this TaskHandle belongs to no engine; handles come from Engine.submit()")
        if timeout is not None and timeout == 0:
            # a poll never blocks, so it lends no worker (no stand-in thread)
            raise TimeoutError(f"task {self.task_id} did not finish within {timeout} s")
        signals = _signals_here()
        core._before_blocking_wait(self)
        try:
            while True:
                end = _slice_end(deadline, signals)
                with nogil:
                    done = ct_waitset_wait(&core._done, status, ST_SUCCEEDED, end)
                if done == 1:
                    break
                if signals:
                    PyErr_CheckSignals()   # Ctrl-C: KeyboardInterrupt from here
                if deadline >= 0 and ct_now_ns() >= deadline:
                    break
        finally:
            core._after_blocking_wait(self)
        if done != 1:
            raise TimeoutError(f"task {self.task_id} did not finish within {timeout} s")
        return 0

    def wait(self, timeout=None):
        """Wait until done; return True, or False if `timeout` s passed first."""
        try:
            self._wait(timeout)
        except TimeoutError:
            return False
        return True

    def result(self, timeout=None):
        """The task's return value; re-raises its exception; TimeoutError if not done in time.

        A cancelled task raises ``concurrent.futures.CancelledError``.
        """
        self._wait(timeout)
        if self._result_kind != 0:
            self._materialize()
        if self._load_status() == ST_SUCCEEDED:
            return self._value
        raise self._value

    def exception(self, timeout=None):
        """The exception the task raised, or None if it succeeded."""
        self._wait(timeout)
        if self._result_kind != 0:
            self._materialize()
        cdef int32_t st = self._load_status()
        if st == ST_SUCCEEDED:
            return None
        if st == ST_CANCELLED:
            raise self._value
        return self._value

    # -- cancellation ---------------------------------------------------------

    def cancel(self):
        """Cancel the task if it has not started: True if it will never run.

        For a running task this sets ``cancel_requested`` (cooperative) and returns
        False; a finished task is left as it is.
        """
        cdef int32_t *status = self._status_ptr()
        cdef int32_t st
        while True:
            st = ct_load_i32(status)
            if st == ST_PENDING or st == ST_SCHEDULED or st == ST_RETRYING:
                if ct_cas_i32(status, st, ST_CANCELLED):
                    self._finish_cancelled("cancelled before it ran")
                    return True
                continue
            if st == ST_RUNNING:
                self._cancel_requested = True
            return st == ST_CANCELLED

    cdef void _finish_cancelled(self, str why) noexcept:
        """The status is already CANCELLED; publish the error and wake waiters."""
        self._value = _cancelled_error(self.task_id, why)
        self._release_call()
        if self._core is not None:   # None: a handle made without an engine
            self._core._account_cancel()
        self._done_published()

    # -- completion (all under the GIL) ---------------------------------------

    cdef void _release_call(self) noexcept:
        self._fn = None
        self._args = None
        self._kwargs = None

    cdef void _materialize(self) noexcept:
        """Turn a finished native call's slot or return code into a Python value."""
        cdef ct_ncall *call = self._ncall
        cdef int32_t st = ct_load_i32(&call.status)
        if st == ST_SUCCEEDED:
            if self._result_kind == b'd':
                self._value = call.result.d
            elif self._result_kind == b'b':
                self._value = call.result.i != 0
            else:
                self._value = call.result.i
        elif st == ST_FAILED:
            try:
                self._value = _native_error_for(call.rc)
            except BaseException as exc:
                self._value = exc
        else:
            return   # cancelled: _value already holds the CancelledError
        self._result_kind = 0   # _value now holds the Python result

    cdef void _done_published_native(self) noexcept:
        """A native call's worker already stored the status and woke waiters."""
        if self._result_kind != 0:
            self._materialize()
        self._finished_ns = ct_now_ns()
        self._let_go()
        if self._callbacks is not None:
            self._run_callbacks()

    cdef void _done_published(self) noexcept:
        """After the terminal status is visible: wake waiters, run callbacks."""
        self._finished_ns = ct_now_ns()
        if self._core is not None:   # None: a handle made without an engine
            ct_waitset_notify(&self._core._done)
        self._let_go()
        if self._callbacks is not None:
            self._run_callbacks()

    cdef void _let_go(self) noexcept:
        """The task ended: drop the engine; let the GC see a result that may cycle back."""
        self._core = None
        # a handle is GC-untracked, so a result that is a handle (this one: a task
        # returning current_task(); or one whose result leads back here) must count too
        if self._value is not None and not PyObject_GC_IsTracked(self) and (
                PyObject_GC_IsTracked(self._value) or type(self._value) is TaskHandle):
            PyObject_GC_Track(<void *>self)

    cdef void _run_callbacks(self) noexcept:
        callbacks = self._callbacks
        self._callbacks = None
        for cb in callbacks:
            try:
                cb(self)
            except BaseException as exc:
                _report_unraisable(exc, f"done callback {cb!r} of task {self.task_id}", cb)

    cdef bint _complete_failed_by_worker(self, BaseException exc) noexcept:
        """The worker's own failure path: its counters already count it."""
        return self._complete(ST_FAILED, exc, ST_RUNNING, False)

    cpdef bint _complete(self, int32_t status, value, int32_t expected=-1, bint count=True):
        """Move a non-terminal task to `status` with `value`; False if already terminal.

        `expected`, when given, is the only status the transition may start from (a
        late result from a timed-out attempt must not overwrite its TaskTimeout).
        """
        cdef int32_t *sp = self._status_ptr()
        cdef int32_t st
        if status < ST_SUCCEEDED or status > ST_CANCELLED:
            raise ValueError(f"Expected a terminal status for status, got {status}")
        while True:
            st = ct_load_i32(sp)
            if st >= ST_SUCCEEDED or (expected >= 0 and st != expected):
                return False
            # the value is written before the status that publishes it
            self._value = value
            if ct_cas_i32(sp, st, status):
                break
        self._release_call()
        if self._core is None:   # a handle made without an engine: nothing to count
            pass
        elif status == ST_SUCCEEDED:
            if count:
                self._core._account_succeeded()
        elif status == ST_FAILED:
            if count:
                self._core._account_failed_outside()
        else:
            self._core._account_cancel()
        self._done_published()
        return True

    cpdef bint _transition(self, int32_t expected, int32_t status):
        """CAS the status between two non-terminal states (scheduled -> pending ...)."""
        if not (ST_PENDING <= expected <= ST_CANCELLED and ST_PENDING <= status <= ST_CANCELLED):
            raise ValueError(f"Expected task statuses 0-6, got {expected} -> {status}")
        return ct_cas_i32(self._status_ptr(), expected, status)

    def add_done_callback(self, fn):
        """Call ``fn(handle)`` when the task ends (at once if it already has).

        The callback runs on the thread that finished the task, or on the calling
        thread if the task has already ended.  Either way an ``Exception`` it raises
        goes to ``sys.unraisablehook`` and never to the code that added the callback
        or finished the task (``concurrent.futures.Future`` logs it instead).
        """
        if not callable(fn):
            raise TypeError(f"Expected a callable for fn, got {type(fn).__name__}")
        if self._load_status() >= ST_SUCCEEDED and self._callbacks is None:
            try:
                fn(self)
            except Exception as exc:
                _report_unraisable(exc, f"done callback {fn!r} of task {self.task_id}", fn)
            return
        # Python tasks reach a terminal status under the GIL and run the list at
        # once; a native task stores its status without the GIL and its worker runs
        # the list at its next GIL visit, so appending here is never too late.
        if self._callbacks is None:
            self._callbacks = [fn]
        else:
            self._callbacks.append(fn)

    def __await__(self):
        from cytask._aio import await_handle
        return await_handle(self).__await__()

    # -- engine-private accessors used by the Python layer ---------------------

    @property
    def _fn_(self):
        return self._fn

    @property
    def _finished_monotonic(self):
        return self._finished_ns / 1e9 if self._finished_ns else None

    def _request_cancel(self):
        """Ask a running task to stop (time limit, shutdown): it sees cancel_requested."""
        self._cancel_requested = True


cdef object _status_enum(int32_t st):
    return _TaskStatus(STATUS_NAMES[st])


cdef object _priority_enum(int p):
    return _Priority(p)


_TaskStatus = None
_Priority = None
_CancelledError = None


def _bind_enums(status_cls, priority_cls, cancelled_cls):
    """Called once by cytask's __init__: the enums live in Python modules."""
    global _TaskStatus, _Priority, _CancelledError
    _TaskStatus = status_cls
    _Priority = priority_cls
    _CancelledError = cancelled_cls


cdef object _cancelled_error(int64_t task_id, str why):
    return _CancelledError(f"task {task_id} {why}")


def report_unraisable(BaseException exc, str where, obj=None):
    """Hand an exception nobody can receive to ``sys.unraisablehook`` (never raises).

    The hook gets a real ``UnraisableHookArgs``: ``err_msg`` is
    ``"Exception ignored in <where>"`` and ``object`` is `obj` (None on 3.13+).
    """
    _report_unraisable(exc, where, obj)


cdef extern from *:
    """
    /* CPython's own path for unraisable errors, with a message of ours: the hook
       receives a real sys.UnraisableHookArgs, and if the hook itself fails CPython
       reports that through the default hook.  `exc` becomes the current error. */
    static void ct_write_unraisable(PyObject *exc, const char *where, PyObject *obj) {
        PyObject *tb = PyException_GetTraceback(exc);   /* new reference or NULL */
        Py_INCREF(Py_TYPE(exc));
        Py_INCREF(exc);
        PyErr_Restore((PyObject *)Py_TYPE(exc), exc, tb);   /* steals all three */
    #if PY_VERSION_HEX >= 0x030D0000
        (void)obj;
        PyErr_FormatUnraisable("Exception ignored in %s", where);
    #else
        _PyErr_WriteUnraisableMsg(where, obj);   /* "Exception ignored %s" */
    #endif
    }
    """
    void ct_write_unraisable(object exc, const char *where, object obj)


cdef void _report_unraisable(BaseException exc, str where, obj=None) noexcept:
    cdef bytes text
    try:
        if PY_VERSION_HEX < 0x030D0000:
            where = "in " + where   # 3.11/3.12 prefix only "Exception ignored "
        text = where.encode("utf-8", "backslashreplace").replace(b"\0", b"?")
        ct_write_unraisable(exc, text, obj)
    except BaseException:
        pass


# A function made of Python bytecode: calling it runs the interpreter's eval-breaker
# check (at RESUME), which drops the GIL for a thread that asked for it (after the
# switch interval, sys.getswitchinterval()) and takes it back afterwards.  C code
# has no other public way to honour that request without dropping the GIL blindly.
_gil_yield_point = eval(compile("lambda: None", "<cytask GIL yield point>", "eval"))


cdef inline void _gil_yield() noexcept:
    """Let a thread waiting for the GIL in, if one asked; cheap when none did."""
    try:
        _gil_yield_point()
    except BaseException as exc:   # an async exception delivered to this worker
        _report_unraisable(exc, "a cytask worker's GIL yield point")


# ---------------------------------------------------------------------------
# Debug counters (debug build only): pushed, popped, live handles

cdef int64_t _debug_counters[3]
memset(_debug_counters, 0, sizeof(_debug_counters))

DEBUG_BUILD = bool(CT_DEBUG)


def debug_counters():
    """(pushed, popped, live_handles) in a CYTASK_DEBUG=1 build; None otherwise."""
    if not CT_DEBUG:
        return None
    return (ct_load_i64(&_debug_counters[0]), ct_load_i64(&_debug_counters[1]),
            ct_load_i64(&_debug_counters[2]))


cdef inline bint _is_native(void *item) noexcept nogil:
    return (<uintptr_t>item & CT_TAG_NATIVE) != 0


cdef inline ct_ncall *_as_ncall(void *item) noexcept nogil:
    return <ct_ncall *>(<uintptr_t>item & ~CT_TAG_NATIVE)


cdef extern from "Python.h":
    ctypedef struct PyCodeObject:
        int co_flags
    ctypedef struct PyTypeObject:
        pass
    PyObject *PyFunction_GET_CODE(object op)
    PyObject *PyMethod_GET_FUNCTION(object op)
    PyTypeObject *Py_TYPE(object op)
    # static type objects: comparing pointers costs no module-global lookup
    PyTypeObject PyFunction_Type
    PyTypeObject PyMethod_Type
    PyTypeObject PyGen_Type
    PyTypeObject PyAsyncGen_Type

cdef enum:
    CO_GENERATOR = 0x20
    CO_ASYNC_GENERATOR = 0x200


cdef inline bint _is_generator_function(object fn):
    """True for a (bound) generator or async-generator function: a few loads, no
    attribute lookups, since every submit asks.  Other callables that return a
    generator are caught when they run (_run_python)."""
    cdef PyObject *f = <PyObject *>fn
    if Py_TYPE(fn) == &PyMethod_Type:
        f = PyMethod_GET_FUNCTION(fn)
    if Py_TYPE(<object>f) != &PyFunction_Type:
        return False   # None (a native task without fallback) too
    return ((<PyCodeObject *>PyFunction_GET_CODE(<object>f)).co_flags
            & (CO_GENERATOR | CO_ASYNC_GENERATOR)) != 0


# ---------------------------------------------------------------------------
# The engine core

cdef class Core:
    """Queues and workers.  Subclassed by ``cytask.Engine``; not used directly."""

    cdef ct_ring _rings[N_LEVELS]
    cdef ct_parker _parker
    # threads blocked in TaskHandle.result() wait here (see ct_park.h)
    cdef ct_waitset _done
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
    # Always 0: no worker is asked to retire while busy any more (see _surplus).  Kept
    # for the check in _gil_section, which is not this change's to edit; both can go.
    cdef int32_t _retire_debt
    # workers outside the base pool: those lending their slot (blocked on their own
    # engine, a stand-in runs for each) plus _surplus.  Idle retirement keeps
    # _live_workers - _reserved >= _min_workers, so a stand-in that idles while its
    # lender still waits never takes the last runnable worker with it.  += / -= under
    # the GIL by spawn, lend and return; -= by a worker leaving as surplus (SEQ_CST)
    cdef int32_t _reserved
    # 1 once shutdown began: workers exit when they find every ring empty
    cdef int32_t _stopping
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
    # when a worker last took the fingerprint (under the GIL): one look per APP_LOOK_NS serves all
    # workers (many workers finishing I/O tasks would otherwise look all the time)
    cdef int64_t _app_looked_ns
    # polite workers start no Python task before then: each slice of Python work
    # pushes it later by slice * (1 - share) / share.  Written under the GIL only
    # (so no lost update), read without it by workers about to take the GIL.
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
        if self._rings_ready:
            # workers hold a reference to the core while alive, so none runs here
            for lvl in range(N_LEVELS):
                self._drain_ring_unlocked(lvl)
                ct_ring_free(&self._rings[lvl])
        free(self._workers)
        ct_parker_free(&self._parker)

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
        return self._submit(fn, args, kwargs if kwargs else None, 2, None)

    cdef int _check_ready(self) except -1:
        if not self._rings_ready:
            raise RuntimeError(
                f"{type(self).__name__}.__init__ did not run Engine.__init__: call "
                f"super().__init__(...) in your subclass's __init__")
        return 0

    cdef TaskHandle _new_handle(self, fn, tuple args, dict kwargs, int prio,
                                TaskOptions options):
        # one well-predicted branch on the submit path for three rare misuses: an
        # engine whose __init__ never ran, a priority outside the rings, a generator
        if not self._rings_ready or <unsigned int>prio >= N_LEVELS \
                or _is_generator_function(fn):
            self._check_ready()
            if prio < 0 or prio >= N_LEVELS:
                raise ValueError(f"Expected a cytask.Priority for priority, got {prio!r}")
            import inspect   # only on this error path: `import cytask` does not load it
            kind = "an async generator" if inspect.isasyncgenfunction(fn) else "a generator"
            raise TypeError(
                f"Expected a plain or async function for fn, got {kind} function "
                f"{getattr(fn, '__qualname__', fn)!r}: calling it only creates a generator, "
                f"so its body would never run; make it return a list (or a value) instead")
        if self._closed:
            raise _engine_closed(
                f"engine {getattr(self, 'name', '')} is shut down and takes no more tasks; "
                f"create a new Engine")
        cdef TaskHandle h = TaskHandle.__new__(TaskHandle)
        h.task_id = self._next_id
        self._next_id += 1
        PyObject_GC_UnTrack(<void *>h)   # see the class docstring
        h._core = self
        h._fn = fn
        h._args = args
        h._kwargs = kwargs
        h._priority = prio
        h.options = options
        if self._results is not None:
            self._results[h.task_id % self._results_len] = h
        return h

    cdef TaskHandle _submit(self, fn, tuple args, dict kwargs, int prio, TaskOptions options):
        cdef TaskHandle h = self._new_handle(fn, args, kwargs, prio, options)
        self._enqueue(h)
        return h

    def _submit_handle(self, fn, tuple args, kwargs, int priority, TaskOptions options,
                       bint scheduled):
        """Create a handle; queue it now, or leave it SCHEDULED for the engine's timer."""
        cdef TaskHandle h = self._new_handle(fn, args, kwargs if kwargs else None,
                                             priority, options)
        if scheduled:
            h._status = ST_SCHEDULED
        else:
            self._enqueue(h)
        return h

    def _enqueue_handle(self, TaskHandle h, int32_t from_status, double wait=-1.0):
        """Queue a SCHEDULED/RETRYING (or PENDING) handle now. False if cancelled.

        With `wait` >= 0 (the timer, which must never block, and its hand-off): wait at
        most that long for space, then return None, the handle left PENDING for the
        caller to push later.  Otherwise wait as submit() does (submit_timeout, then
        the handle fails with QueueFull).
        """
        self._check_ready()
        if h._core is not self:   # None: it ended (cancelled) and let go of its engine
            if h._core is None:
                return False
            raise ValueError(f"task {h.task_id} belongs to another engine")
        if not ct_cas_i32(h._status_ptr(), from_status, ST_PENDING):
            return False
        if not self._enqueue(h, wait):
            return None
        return True

    cdef int _enqueue(self, TaskHandle h, double wait=-1.0) except -1:
        """Push a PENDING handle (the ring takes a reference), waiting for space up to
        submit_timeout, then failing it with QueueFull.

        Returns 1.  With `wait` >= 0: waits at most `wait` s and returns 0 (nothing
        pushed, nothing failed) if the level is still full.
        """
        cdef ct_ring *ring = &self._rings[h._priority]
        cdef void *item
        if h._ncall != NULL:
            item = <void *>(<uintptr_t>h._ncall | CT_TAG_NATIVE)
        else:
            item = <void *>h
        cdef int rc
        Py_INCREF(h)
        if not ct_ring_push(ring, item):
            try:
                rc = self._wait_for_space_lending(
                    ring, item, wait if wait >= 0 else self._submit_timeout)
            except BaseException:
                # a signal handler raised (Ctrl-C): the task was never queued
                Py_DECREF(h)
                self._cancel_unqueued(
                    h, "was not queued: submit() was interrupted while it waited for space")
                raise
            if rc != SPACE_PUSHED:
                Py_DECREF(h)
                if rc == SPACE_TIMED_OUT:
                    if wait >= 0:
                        return 0   # still PENDING: the caller pushes it later
                    self._overflow(h)
                self._cancel_unqueued(h, self._abort_why if rc == SPACE_ABORTED else
                                      "was not queued: the engine shut down while submit() "
                                      "waited for queue space")
                return 1   # ended (cancelled): nothing left to push
        if ct_load_i32(&self._space_abort):
            # shutdown may have emptied the rings just before this push landed
            self._cancel_queued(self._abort_why)
        if CT_DEBUG:
            ct_add_i64(&_debug_counters[0], 1)
        ct_parker_notify_one(&self._parker)
        if ct_load_i32(&self._grower.waiters) and not ct_load_i32(&self._parker.sleepers):
            self._poke_grower()
        return 1

    cdef void _poke_grower(self) noexcept:
        """Work was queued and no worker is idle: wake the auto-scaler, once."""
        if ct_xchg_i32(&self._grower.waiters, 0) == 1:
            ct_add_i32(<int32_t *>&self._grower.seq, 1)
            ct_futex_wake_all(&self._grower.seq)

    def _poke_grower_now(self):
        """Wake the auto-scaler unconditionally (shutdown)."""
        ct_store_i32(&self._grower.waiters, 1)
        self._poke_grower()

    def _grower_park(self, double timeout):
        """The auto-scaler sleeps here (GIL released) until work arrives with no
        idle worker, or `timeout` seconds pass."""
        cdef uint32_t s
        cdef int64_t t = <int64_t>(timeout * 1e9) if timeout < FOREVER_S else -1
        with nogil:
            ct_store_i32(&self._grower.waiters, 1)
            s = ct_load_u32(&self._grower.seq)
            if self._all_empty() or ct_load_i32(&self._parker.sleepers):
                ct_futex_wait(&self._grower.seq, s, t)
            ct_store_i32(&self._grower.waiters, 0)

    cdef int _wait_for_space_lending(self, ct_ring *ring, void *item,
                                     double timeout) except -1:
        """_wait_for_space, but a worker of this engine (a task submitting children, a
        retry) lends its slot to a stand-in while it waits: it would otherwise wait for
        itself, and with every worker waiting so, forever.  Without a stand-in (thread
        limit) it does not wait: the push fails (QueueFull).  Returns a SPACE_ code."""
        if timeout == 0 or self._own_slot() < 0:
            return self._wait_for_space(ring, item, timeout)
        if not self._lend_slot():
            return SPACE_TIMED_OUT
        try:
            return self._wait_for_space(ring, item, timeout)
        finally:
            self._return_slot()

    cdef int _wait_for_space(self, ct_ring *ring, void *item, double timeout) except -1:
        """The ring was full: wait (GIL released) until a pop frees a slot, at most
        `timeout` s (< 0: without limit), and push `item`.

        Returns SPACE_PUSHED, SPACE_TIMED_OUT (`timeout` passed), SPACE_ABORTED
        (shutdown cancels queued tasks) or SPACE_STOPPED.  In the main thread it looks
        at signals every slice and raises what a handler raises (KeyboardInterrupt).
        """
        cdef int64_t deadline = -1
        cdef int rc = SPACE_WAIT
        cdef bint signals
        if timeout == 0:
            return SPACE_TIMED_OUT
        # Registered before anything can release the GIL after the failed push: the ring
        # was full, so every worker that emptied it since must take the GIL (to run what
        # it popped, or to flush finished native tasks) before it can decide to exit, and
        # by then it sees this producer (a stopping worker waits for producers).
        ct_add_i32(&self._space.waiters, 1)
        if timeout > 0:
            deadline = _deadline_ns(timeout)
        signals = _signals_here()
        while rc == SPACE_WAIT:
            with nogil:
                rc = self._space_slice(ring, item, deadline, signals)
            if rc == SPACE_WAIT:
                rc = self._space_check_signals()
                if rc == SPACE_STOPPED:
                    return rc   # released (unregistered) by a shutdown in the handler
        self._space_left()
        return rc

    cdef int _space_check_signals(self) except -1:
        """Run pending signal handlers for a producer (main thread) waiting for space.

        A handler may shut the engine down and wait for it (install_signal_handlers):
        that wait must not wait for this producer, which cannot push until the handler
        returns.  So the producer leaves a marker; _wait_workers_exit on this thread
        releases it (unregisters it), and the producer then gives up (SPACE_STOPPED).
        """
        marker = [False]
        self._signal_producers.append(marker)
        try:
            PyErr_CheckSignals()   # Ctrl-C: KeyboardInterrupt from here
        except BaseException:
            if not marker[0]:
                self._space_left()
            raise
        finally:
            for i in range(len(self._signal_producers) - 1, -1, -1):
                if self._signal_producers[i] is marker:   # by identity: [False] == [False]
                    del self._signal_producers[i]
                    break
        return SPACE_STOPPED if marker[0] else SPACE_WAIT

    cdef void _release_signal_producers(self) noexcept:
        cdef list marker
        for marker in self._signal_producers:
            if not marker[0]:
                marker[0] = True
                self._space_left()

    cdef int _space_slice(self, ct_ring *ring, void *item, int64_t deadline,
                          bint signals) noexcept nogil:
        """Wait for space until the deadline, or one slice where signals count."""
        cdef int64_t end = _slice_end(deadline, signals)
        cdef int64_t now
        cdef uint32_t s
        while True:
            s = ct_load_u32(&self._space.seq)
            if ct_load_i32(&self._space_abort):
                return SPACE_ABORTED
            if ct_ring_push(ring, item):
                return SPACE_PUSHED
            now = ct_now_ns()
            if deadline >= 0 and now >= deadline:
                return SPACE_TIMED_OUT
            if end >= 0 and now >= end:
                return SPACE_WAIT
            # a worker pops, sees waiters > 0 and bumps seq: no lost wake-up
            ct_parker_notify_one(&self._parker)
            if ct_futex_wait(&self._space.seq, s, end - now if end >= 0 else -1) and signals:
                return SPACE_WAIT

    cdef void _space_left(self) noexcept:
        """A producer stops waiting for space: stopping workers may exit now."""
        ct_add_i32(&self._space.waiters, -1)
        if ct_load_i32(&self._stopping):
            ct_parker_notify_all(&self._parker)

    cdef void _cancel_unqueued(self, TaskHandle h, str why) noexcept:
        """A task that never got into a ring ends cancelled (unless it already ended)."""
        if h._transition(ST_PENDING, ST_CANCELLED):
            h._finish_cancelled(why)

    cdef void _overflow(self, TaskHandle h) except *:
        exc = _queue_full(
            f"priority {_priority_enum(h._priority).name} queue is full "
            f"({self._queue_size} tasks) and stayed full for submit_timeout="
            f"{self._submit_timeout if self._submit_timeout >= 0 else None} s; "
            f"raise queue_size or submit_timeout, or submit more slowly")
        exc.handle = h
        h._complete(ST_FAILED, exc)
        raise exc

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
        cdef ct_ncall *call
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
        call = <ct_ncall *>calloc(1, sizeof(ct_ncall))
        if call == NULL:
            raise MemoryError()
        call.fn = <ct_native_fn>address
        call.nargs = <int32_t>n
        call.status = ST_PENDING
        memcpy(call.args, packed, n * sizeof(ct_slot))
        try:
            h = self._new_handle(fallback, args, None, priority, None)
        except BaseException:
            free(call)
            raise
        h._ncall = call
        h._result_kind = result_kind[0]
        call.owner = <PyObject *>h
        self._enqueue(h)
        return h

    # -- workers ----------------------------------------------------------------

    def _spawn_worker(self):
        """Start one worker thread; returns its slot.  Raises RuntimeError when no
        thread can be started (every slot taken, or the system's thread limit)."""
        cdef int slot
        self._check_ready()
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
            _thread.start_new_thread(self._worker_main, (slot,))
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

    cdef int _own_slot(self):
        """The calling thread's worker slot in this engine, or -1."""
        entry = _worker_slots.get(threading.get_ident())
        if entry is None or entry[0] is not self or entry[1] == INLINE_SLOT:
            return -1
        return entry[1]

    def _lend_slot(self):
        """The calling worker is about to block on this engine: let a stand-in run in
        its place until _return_slot().  Reuses an extra worker whose retirement is
        still pending before it starts a thread, so a task that polls (many short
        waits) keeps one stand-in, not one per call.  True if the calling thread is
        not one of this engine's workers, or a stand-in runs; False if none could be
        started (the caller then waits without one, or fails)."""
        cdef int slot = self._own_slot()
        if slot < 0 or self._workers[slot].lent:
            return True
        if ct_load_i32(&self._stopping):
            return True   # shutting down: every worker leaves once the rings are empty
        if self._cancel_retire():
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
        cdef int slot = self._own_slot()
        if slot >= 0 and self._workers[slot].lent:
            self._workers[slot].lent = 0
            ct_add_i32(&self._surplus, 1)   # still reserved: now as surplus

    cdef bint _cancel_retire(self) noexcept:
        """Take back one pending retirement: the surplus worker stays (still reserved,
        now for a lender).  True if there was one."""
        cdef int32_t debt = ct_load_i32(&self._surplus)
        while debt > 0:
            if ct_cas_i32(&self._surplus, debt, debt - 1):
                return True
            debt = ct_load_i32(&self._surplus)
        return False

    def _wait_workers_exit(self, timeout):
        """Wait (GIL released) until every worker has exited, except the calling
        thread and workers abandoned after a time limit.  False on time-out."""
        cdef int64_t deadline = -1
        cdef int64_t end, now
        cdef uint32_t s
        cdef int own = -1
        cdef bint done = False
        cdef bint signals = _signals_here()
        entry = _worker_slots.get(threading.get_ident())
        if entry is not None and entry[0] is self:
            own = entry[1]
        if timeout is not None:
            deadline = _deadline_ns(timeout)
        if signals:
            # called from a signal handler that interrupted this thread's own wait for
            # queue space: that producer must not keep the workers from exiting
            self._release_signal_producers()
        while True:
            end = _slice_end(deadline, signals)
            with nogil:
                while True:
                    s = ct_load_u32(&self._exited.seq)
                    if self._running_workers(own) == 0:
                        done = True
                        break
                    now = ct_now_ns()
                    if end >= 0 and now >= end:
                        break
                    if ct_futex_wait(&self._exited.seq, s, end - now if end >= 0 else -1) \
                            and signals:
                        break
            if done:
                return True
            if signals:
                PyErr_CheckSignals()   # Ctrl-C: KeyboardInterrupt from here
            if deadline >= 0 and ct_now_ns() >= deadline:
                return False

    cdef int _running_workers(self, int except_slot) noexcept nogil:
        cdef int i
        cdef int n = 0
        for i in range(INLINE_SLOT):
            if i != except_slot and ct_load_i32(&self._workers[i].alive) \
                    and not ct_load_i32(&self._workers[i].abandoned):
                n += 1
        return n

    def _run_inline(self, TaskHandle h):
        """Run a PENDING handle on the calling thread (eager mode), like a worker would."""
        self._check_ready()
        if h._core is not self and h._core is not None:
            raise ValueError(f"task {h.task_id} belongs to another engine")
        if ct_load_i32(&h._status) != ST_PENDING:
            raise RuntimeError(f"task {h.task_id} is not pending")
        previous = _worker_slots.get(threading.get_ident())
        _worker_slots[threading.get_ident()] = (self, INLINE_SLOT)
        outer = self._current[INLINE_SLOT]   # an eager task may submit eager tasks
        try:
            self._run_python(&self._workers[INLINE_SLOT], INLINE_SLOT, h)
        finally:
            self._current[INLINE_SLOT] = outer
            if previous is None:
                del _worker_slots[threading.get_ident()]
            else:
                _worker_slots[threading.get_ident()] = previous

    def _replace_stuck_worker(self, TaskHandle h, int max_stuck):
        """After a time limit: start a replacement for the worker stuck in `h`; the stuck
        thread then leaves the pool when `h` returns.  True if replaced.

        Bounded: at most `max_stuck` stuck threads at a time.  Past that bound, or when
        no thread can be started, the worker stays in the pool (it rejoins when its
        task returns) and the engine runs with fewer free workers meanwhile, never
        with none it could have kept.
        """
        cdef int slot = self._running_slot(h)
        if slot < 0:
            return False
        if self._closed:
            # shutting down: no replacement, but shutdown does not wait for the thread
            ct_store_i32(&self._workers[slot].abandoned, 1)
            ct_add_i32(&self._live_workers, -1)
            return False
        if self._stuck_workers() >= max_stuck:
            self._warn_once(
                "the bound on stuck threads",
                f"cytask engine {getattr(self, 'name', '')}: {max_stuck} threads are already "
                f"stuck in timed-out tasks, so the worker of task {h.task_id} gets no "
                f"replacement; it rejoins the pool when its task returns.  Raise "
                f"max_workers for more replacements; stats().stuck_workers counts them.")
            return False
        if not self._try_spawn_worker("a replacement for a worker stuck past a time limit"):
            return False
        # the spawn may have let other threads run: is the task still on that worker?
        slot = self._running_slot(h)
        if slot < 0:
            self._request_retire(1)   # it returned meanwhile: the replacement is surplus
            return False
        ct_store_i32(&self._workers[slot].abandoned, 1)
        # it no longer counts as a worker: not towards the pool size, not towards the
        # minimum that idle workers retire down to
        ct_add_i32(&self._live_workers, -1)
        return True

    cdef int _running_slot(self, TaskHandle h):
        cdef int slot
        self._check_ready()
        for slot in range(INLINE_SLOT):
            if self._current[slot] is h and ct_load_i32(&self._workers[slot].alive) \
                    and not ct_load_i32(&self._workers[slot].abandoned):
                return slot
        return -1

    cdef int _stuck_workers(self) noexcept:
        """Threads still inside a task they were abandoned in (time limit)."""
        cdef int i
        cdef int n = 0
        for i in range(INLINE_SLOT):
            if ct_load_i32(&self._workers[i].alive) and ct_load_i32(&self._workers[i].abandoned):
                n += 1
        return n

    def _request_retire(self, int n):
        """Mark `n` workers surplus: as many idle workers exit after their idle time-out
        (worker_idle_timeout), unless _lend_slot reuses them as stand-ins first."""
        ct_add_i32(&self._reserved, n)
        ct_add_i32(&self._surplus, n)

    def _worker_main(self, int slot):
        """A worker thread's whole life: the nogil loop, GIL only at _gil_section."""
        cdef ct_worker *w = &self._workers[slot]
        cdef void *item = NULL
        cdef ct_ncall *call
        cdef ct_ncall *deferred[NATIVE_DEFER_MAX]
        cdef int ndeferred = 0
        cdef int64_t first_deferred_ns = 0
        cdef int64_t t0, t1
        cdef int32_t rc
        try:
            # inside the try: whatever fails here, the slot is freed and shutdown
            # does not wait for a worker that never ran
            _worker_slots[threading.get_ident()] = (self, slot)
            self._own_thread()
            with nogil:
                while True:
                    if item == NULL:
                        if ndeferred > 0 and (
                                ndeferred >= NATIVE_DEFER_MAX
                                or ct_now_ns() - first_deferred_ns > NATIVE_FLUSH_NS
                                or self._all_empty()):
                            # GIL: run callbacks and drop references of finished natives
                            with gil:
                                item = self._gil_section(w, slot, NULL, deferred, ndeferred)
                            ndeferred = 0
                            continue
                        item = self._next_item(w, ndeferred > 0)
                        if item == NULL:
                            if ndeferred > 0:
                                continue   # idle: flush before parking or exiting
                            break
                    if _is_native(item):
                        call = _as_ncall(item)
                        item = NULL
                        if CT_DEBUG:
                            ct_add_i64(&_debug_counters[1], 1)
                        if not ct_cas_i32(&call.status, ST_PENDING, ST_RUNNING):
                            # cancelled while queued: only the reference remains to drop
                            call.rc = -1
                        else:
                            t0 = ct_now_ns()
                            w.task_started_ns = t0
                            rc = call.fn(&call.args[0], &call.result)
                            call.rc = rc
                            t1 = ct_now_ns()
                            w.task_started_ns = 0
                            self._account(w, t1 - t0, rc != CT_RC_OK and rc != CT_RC_PYTHON)
                            if rc == CT_RC_OK:
                                ct_bump_i64(&w.succeeded, 1)
                            if rc != CT_RC_PYTHON:
                                ct_store_i32(&call.status,
                                             ST_SUCCEEDED if rc == CT_RC_OK else ST_FAILED)
                                ct_waitset_notify(&self._done)
                        if ndeferred == 0:
                            first_deferred_ns = ct_now_ns()
                        deferred[ndeferred] = call
                        ndeferred += 1
                        continue
                    # the one marked point where a worker takes the GIL for Python tasks
                    if self._gil_share < 1.0:
                        self._polite_pause()
                    with gil:
                        item = self._gil_section(w, slot, item, deferred, ndeferred)
                    ndeferred = 0
                    if ct_load_i32(&w.abandoned):
                        # a replacement took this slot's place; hand back any popped item
                        if item != NULL:
                            with gil:
                                self._requeue(item)
                        break   # _replace_stuck_worker already took it off _live_workers
        finally:
            try:
                _worker_slots.pop(threading.get_ident(), None)
                self._own_thread(False)
                self._current[slot] = None
            finally:   # the slot is free, and shutdown sees it, whatever happened above
                ct_store_i32(&w.alive, 0)
                ct_add_i32(<int32_t *>&self._exited.seq, 1)
                ct_futex_wake_all(&self._exited.seq)

    cdef void _requeue(self, void *item) noexcept:
        """Push back an item this worker popped but will not run (it is exiting)."""
        cdef TaskHandle h
        if _is_native(item):
            h = <TaskHandle>_as_ncall(item).owner
        else:
            h = <TaskHandle><PyObject *>item
        try:
            self._enqueue(h)
        except BaseException as exc:
            _report_unraisable(exc, f"requeueing task {h.task_id}")
        Py_DECREF(h)   # the reference the popped item carried

    cdef inline bint _all_empty(self) noexcept nogil:
        cdef int lvl
        for lvl in range(N_LEVELS):
            if ct_ring_size(&self._rings[lvl]) != 0:
                return False
        return True

    cdef inline void *_pop(self) noexcept nogil:
        """The oldest item of the highest non-empty level, or NULL.

        With a starvation limit, a level that was passed over that many times is
        served first (see _pop_aging)."""
        cdef void *item
        cdef int lvl
        if self._starvation_limit:
            return self._pop_aging()
        for lvl in range(N_LEVELS):
            item = ct_ring_pop(&self._rings[lvl])
            if item != NULL:
                if ct_load_i32(&self._space.waiters) > 0:
                    ct_waitset_notify(&self._space)
                return item
        return NULL

    cdef void *_pop_aging(self) noexcept nogil:
        """Strict priority, except that a level passed over `_starvation_limit` times
        while it waited gets the next pop (the highest such level first)."""
        cdef void *item = NULL
        cdef int lvl, lower
        cdef int served = -1
        for lvl in range(1, N_LEVELS):
            if ct_load_i32(&self._bypassed[lvl]) >= self._starvation_limit:
                ct_store_i32(&self._bypassed[lvl], 0)
                item = ct_ring_pop(&self._rings[lvl])
                if item != NULL:
                    served = lvl
                    break
        if item == NULL:
            for lvl in range(N_LEVELS):
                item = ct_ring_pop(&self._rings[lvl])
                if item != NULL:
                    served = lvl
                    break
        if item == NULL:
            return NULL
        ct_store_i32(&self._bypassed[served], 0)
        for lower in range(served + 1, N_LEVELS):
            if ct_ring_size(&self._rings[lower]) != 0:
                ct_add_i32(&self._bypassed[lower], 1)
            elif ct_load_i32(&self._bypassed[lower]) != 0:
                ct_store_i32(&self._bypassed[lower], 0)   # nobody waits there
        if ct_load_i32(&self._space.waiters) > 0:
            ct_waitset_notify(&self._space)
        return item

    @property
    def starvation_limit(self):
        """Pops a waiting level may be passed over before it is served; None: strict."""
        return self._starvation_limit or None

    cdef inline bint _drained(self) noexcept nogil:
        """Shutdown: a worker may exit once no producer waits to queue a task it was
        accepted (read first: a producer pushes before it leaves) and every ring is
        empty."""
        return ct_load_i32(&self._stopping) and ct_load_i32(&self._space.waiters) == 0 \
            and self._all_empty()

    cdef bint _pay_surplus(self) noexcept nogil:
        """An idle worker leaves in place of a surplus one (_surplus)."""
        cdef int32_t debt = ct_load_i32(&self._surplus)
        while debt > 0:
            if ct_cas_i32(&self._surplus, debt, debt - 1):
                # live first: the pool never looks larger than it is to _try_idle_retire
                ct_add_i32(&self._live_workers, -1)
                ct_add_i32(&self._reserved, -1)
                return True
            debt = ct_load_i32(&self._surplus)
        return False

    cdef void *_next_item(self, ct_worker *w, bint has_deferred) noexcept nogil:
        """Pop, spin, then park; NULL means: exit (or flush deferred work first)."""
        cdef void *item
        cdef int _spin
        cdef int64_t timeout
        cdef int64_t park_start, left
        cdef bint idle_timeout = False
        cdef bint woken
        while True:
            item = self._pop()
            if item != NULL:
                return item
            # spin only while fewer than max_spinning workers do (ct_park.h)
            if ct_parker_spin_begin(&self._parker):
                for _spin in range(w.spin_rounds):
                    ct_cpu_relax()
                    ct_cpu_relax()
                    ct_cpu_relax()
                    ct_cpu_relax()
                    item = self._pop()
                    if item != NULL:
                        break
                ct_parker_spin_end(&self._parker)
                if item != NULL:
                    w.spin_rounds = min(w.spin_rounds * 2, SPIN_MAX)
                    return item
                w.spin_rounds = max(w.spin_rounds // 2, SPIN_MIN)
            if has_deferred:
                return NULL
            if self._drained():
                ct_add_i32(&self._live_workers, -1)
                self._pass_wake_on()
                return NULL
            if idle_timeout and (self._pay_surplus() or self._try_idle_retire()):
                self._pass_wake_on()
                return NULL
            idle_timeout = False
            # push, look again, sleep (protocol: ct_park.h)
            ct_parker_push(&self._parker, &w.park)
            item = self._pop()
            if item != NULL or self._drained():
                woken = not ct_parker_leave(&self._parker, &w.park)
            else:
                timeout = -1
                if ct_load_i32(&self._live_workers) > self._min_workers:
                    # some worker may be surplus (auto-scaled, a stand-in, surplus)
                    timeout = self._idle_retire_ns
                park_start = ct_now_ns()
                left = timeout
                while True:
                    ct_parker_sleep(&w.park, left)
                    if ct_load_u32(&w.park) == CT_PARK_WOKEN:
                        woken = not ct_parker_leave(&self._parker, &w.park)
                        break
                    if timeout >= 0:
                        left = timeout - (ct_now_ns() - park_start)
                        if left <= 0:
                            woken = not ct_parker_leave(&self._parker, &w.park)
                            idle_timeout = not woken
                            break
                    # a spurious wake-up (signal): still IDLE, sleep on
            if woken:
                # this worker owns the wake token: clear it before looking at the rings,
                # so an item whose producer found the token taken is seen below
                ct_xchg_i32(&self._parker.wake_pending, 0)
                if item == NULL:
                    item = self._pop()
            if item != NULL:
                if woken and not self._all_empty():
                    ct_parker_notify_one(&self._parker)   # pass the wake on
                return item

    cdef inline void _pass_wake_on(self) noexcept nogil:
        """An exiting worker: work still queued goes to a sleeper (ct_park.h)."""
        if not self._all_empty():
            ct_parker_notify_one(&self._parker)

    cdef bint _try_idle_retire(self) noexcept nogil:
        """An idle worker of the base pool leaves if the pool is above _min_workers."""
        cdef int32_t live = ct_load_i32(&self._live_workers)
        while live - ct_load_i32(&self._reserved) > self._min_workers:
            if ct_cas_i32(&self._live_workers, live, live - 1):
                return True
            live = ct_load_i32(&self._live_workers)
        return False

    cdef inline void _account(self, ct_worker *w, int64_t ns, bint failed) noexcept nogil:
        # single writer (the slot's worker; the inline slot runs under the GIL)
        ct_bump_i64(&w.processed, 1)
        if failed:
            ct_bump_i64(&w.failed, 1)
        ct_bump_i64(&w.busy_ns, ns)
        ct_bump_i64(&w.exec_ns_sum, ns)
        w.hist[hist_bucket(ns)] += 1

    cdef void *_gil_section(self, ct_worker *w, int slot, void *item,
                            ct_ncall **deferred, int ndeferred) noexcept:
        """Under the GIL: finish deferred natives, then run Python tasks while there
        are any.  Returns a popped native item for the nogil loop, or NULL."""
        cdef int i
        cdef int n = 0
        cdef int64_t t_start
        cdef int64_t cpu_start = 0
        cdef bint governed = self._gil_share < 1.0
        cdef bint polite = False
        cdef PyObject *owner
        cdef TaskHandle h
        for i in range(ndeferred):
            owner = deferred[i].owner
            h = <TaskHandle>owner
            Py_DECREF(h)   # the queue's reference; `h` keeps one until reassigned
            self._finish_native(h, slot)
        if item == NULL:
            return NULL
        # The GIL is kept from one Python task to the next for as long as there are
        # any, and left only when the rings run dry (to spin and park without it) or
        # a native task comes up.  It is never dropped and taken straight back between
        # batches: a thread waiting for the GIL restarts its switch-interval timer
        # each time the GIL is dropped, so drops every few milliseconds would keep it
        # from ever asking for the GIL (CPython's take_gil).  Instead the worker
        # passes a yield point between batches, where the interpreter hands the GIL
        # to a thread that has asked for it, exactly as between any two Python threads.
        #
        # With the governor on (gil_share < 1), a worker that sees the application
        # run Python (_app_moved) turns polite: after each slice of Python work it
        # gives the GIL back, and the polite workers pause long enough that their
        # share of the GIL stays at gil_share (_charge_polite, _polite_pause).
        t_start = ct_now_ns()
        if governed:
            polite = ct_load_i64(&self._contended_until_ns) > t_start
            if polite:
                cpu_start = ct_thread_cpu_ns()
        while True:
            if _is_native(item):
                return item
            h = <TaskHandle><PyObject *>item
            Py_DECREF(h)   # drop the queue's reference
            if CT_DEBUG:
                ct_add_i64(&_debug_counters[1], 1)
            self._run_python(w, slot, h)
            if ct_load_i32(&w.abandoned):
                return NULL
            n += 1
            if polite:
                # a slice ends by the clock (cheap) and is charged its CPU time: a
                # task blocked in I/O holds no GIL and costs no pause
                if ct_now_ns() - t_start >= POLITE_SLICE_NS:
                    self._charge_polite(ct_thread_cpu_ns() - cpu_start)
                    self._app_moved()   # still running?  keeps the workers polite
                    return NULL   # the nogil loop pauses before the next Python task
            elif n >= BATCH_MAX or ct_now_ns() - t_start > BATCH_NS:
                if ct_load_i32(&self._retire_debt) > 0:
                    return NULL   # the nogil loop retires this worker
                _gil_yield()
                if governed and self._app_moved():
                    return NULL   # turn polite: pause before the next Python task
                t_start = ct_now_ns()
                n = 0
            item = self._pop()
            if item == NULL:
                return NULL

    cdef bint _app_moved(self) noexcept:
        """Under the GIL: has any thread outside this engine run Python since the
        last look?  If so, the workers stay polite a while longer.

        Each thread's current frame and instruction offset make a fingerprint
        (sys._current_frames(), which reads the thread list under the runtime's
        lock); a thread blocked in a call (epoll, a sleep, a lock) keeps its place,
        one that runs bytecode moves.  This also catches the application convoyed
        behind a busy worker: it gets the GIL once per switch interval, and moves.
        """
        cdef uint64_t fp = 0
        cdef bint moved
        cdef int64_t now = ct_now_ns()
        if now - self._app_looked_ns < APP_LOOK_NS:
            return ct_load_i64(&self._contended_until_ns) > now
        self._app_looked_ns = now
        try:
            frames = _current_frames()
        except BaseException as exc:
            _report_unraisable(exc, "a cytask worker looking at the application's threads")
            return False
        own = self._own_threads
        for ident, frame in frames.items():
            if ident not in own:
                fp = ct_fingerprint(fp, <uint64_t><uintptr_t><PyObject *>frame)
                fp = ct_fingerprint(fp, <uint64_t>PyFrame_GetLasti(<PyFrameObject *>frame))
        moved = fp != self._app_fingerprint
        self._app_fingerprint = fp
        if moved:
            ct_store_i64(&self._contended_until_ns, now + CONTENDED_FOR_NS)
        return moved

    cdef void _charge_polite(self, int64_t used_ns) noexcept:
        """A polite worker ran `used_ns` of Python work: push the next start back."""
        cdef int64_t now = ct_now_ns()
        cdef int64_t nxt = ct_load_i64(&self._polite_next_ns)
        if nxt < now:
            nxt = now
        nxt += <int64_t>(used_ns * (1.0 - self._gil_share) / self._gil_share)
        ct_store_i64(&self._polite_next_ns, nxt)

    cdef void _polite_pause(self) noexcept nogil:
        """Without the GIL: while the application runs, wait for this engine's turn.

        The pause is cut short as soon as the process goes quiet (the application
        blocked in I/O, say): then nobody wants the GIL, and waiting would only
        slow the tasks down.
        """
        cdef int64_t now = ct_now_ns()
        cdef int64_t left, step, cpu
        while ct_load_i64(&self._contended_until_ns) > now \
                and not ct_load_i32(&self._stopping):
            left = ct_load_i64(&self._polite_next_ns) - now
            if left <= 0:
                return
            step = min(left, POLITE_STEP_NS)
            cpu = ct_process_cpu_ns()
            ct_sleep_ns(step)
            if (ct_process_cpu_ns() - cpu) * 25 < step:
                ct_store_i64(&self._polite_next_ns, 0)   # quiet: the debt is waived
                return
            now = ct_now_ns()

    cdef void _finish_native(self, TaskHandle h, int slot) noexcept:
        cdef ct_ncall *call = h._ncall
        if call.rc == CT_RC_PYTHON and ct_load_i32(&call.status) == ST_RUNNING:
            # the native code handed this call back: run the Python function
            self._run_fallback(h, slot)
            return
        h._release_call()
        h._done_published_native()

    cdef void _run_fallback(self, TaskHandle h, int slot) noexcept:
        cdef int32_t *sp = &h._ncall.status
        self._current[slot] = h
        try:
            if h._fn is None:
                raise RuntimeError(
                    "native task asked for the Python fallback but none was given")
            value = h._fn(*h._args)
        except BaseException as exc:
            h._value = exc
            h._result_kind = 0
            ct_store_i32(sp, ST_FAILED)
            ct_bump_i64(&self._workers[slot].failed, 1)
        else:
            h._value = value
            h._result_kind = 0
            ct_store_i32(sp, ST_SUCCEEDED)
            ct_bump_i64(&self._workers[slot].succeeded, 1)
        self._current[slot] = None
        h._release_call()
        h._done_published()

    cdef void _run_python(self, ct_worker *w, int slot, TaskHandle h) noexcept:
        """Run one Python task under the GIL; never raises.

        The worker's counters and current-task slot are settled before the handle
        is completed, so whoever the completion wakes sees them up to date.
        """
        cdef int64_t t0, t1
        cdef BaseException error = None
        cdef bint retried = False
        limit = None   # the timer entry of this attempt's time limit
        if not ct_cas_i32(&h._status, ST_PENDING, ST_RUNNING):
            return   # cancelled while queued: cancel() already finished it
        h._attempts += 1
        self._current[slot] = h
        t0 = ct_now_ns()
        w.task_started_ns = t0
        try:
            if h.options is not None and h.options.timeout > 0:
                limit = self._on_timed_start(h)
            if h._kwargs is None:
                value = h._fn(*h._args)
            else:
                value = h._fn(*h._args, **h._kwargs)
        except BaseException as exc:
            error = exc
            value = None
        else:
            if Py_TYPE(value) == &PyGen_Type or Py_TYPE(value) == &PyAsyncGen_Type:
                error = TypeError(
                    f"task {h.task_id} ({h.name or h._fn!r}) returned a generator: its "
                    f"body never ran; a task must be a plain or async function")
                value = None
        if limit is not None:
            self._on_timed_end(limit)   # the attempt returned: drop its expiry at once
        t1 = ct_now_ns()
        w.task_started_ns = 0
        self._current[slot] = None
        if error is not None:
            retried = self._try_retry(h, error)
            # a task timed out or cancelled meanwhile is not counted as this run's failure
            self._account(w, t1 - t0, not retried and ct_load_i32(&h._status) == ST_RUNNING)
            if not retried:
                h._complete_failed_by_worker(error)
            return
        self._account(w, t1 - t0, False)
        if type(value) is _CoroutineType:
            self._hand_to_loop(h, value)
        else:
            # expected=RUNNING: a time limit may have failed the handle meanwhile
            if h._complete(ST_SUCCEEDED, value, ST_RUNNING, False):
                ct_bump_i64(&w.succeeded, 1)

    cdef bint _try_retry(self, TaskHandle h, BaseException exc) noexcept:
        """A task raised: True if the engine's retry policy queued it again."""
        try:
            if h.options is not None and h.options.retries > 0 \
                    and h._attempts <= h.options.retries \
                    and not h._cancel_requested:
                return self._on_retry(h, exc)
        except BaseException as internal:
            _report_unraisable(internal, f"the retry policy of task {h.task_id}")
        return False

    cdef void _hand_to_loop(self, TaskHandle h, coro) noexcept:
        try:
            self._on_coroutine(h, coro)
        except BaseException as exc:
            coro.close()
            h._complete(ST_FAILED, exc)

    # -- hooks the Python engine overrides ------------------------------------

    def _on_timed_start(self, TaskHandle h):
        """A task with a time limit starts an attempt; returns a token for _on_timed_end."""
        return None

    cdef void _on_timed_end(self, limit) noexcept:
        try:
            limit.cancel()
        except BaseException as exc:
            _report_unraisable(exc, "cancelling a time limit")

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

    cdef void _account_cancel(self) noexcept:
        self._cancelled_count += 1

    cdef void _account_failed_outside(self) noexcept:
        self._failed_outside += 1

    cdef void _account_succeeded(self) noexcept:
        self._succeeded_outside += 1

    def _core_stats(self):
        """Raw counters for EngineStats: a dict of ints and floats."""
        cdef int i, b
        cdef int64_t processed = 0, failed = 0, busy = 0, exec_sum = 0, succeeded = 0
        cdef int64_t now = ct_now_ns()
        cdef int active = 0
        cdef uint64_t hist[HIST_BUCKETS]
        cdef uint64_t total = 0
        cdef ct_worker *w
        memset(hist, 0, sizeof(hist))
        for i in range(MAX_WORKER_SLOTS):
            w = &self._workers[i]
            processed += ct_load_i64(&w.processed)
            failed += ct_load_i64(&w.failed)
            succeeded += ct_load_i64(&w.succeeded)
            busy += ct_load_i64(&w.busy_ns)
            exec_sum += ct_load_i64(&w.exec_ns_sum)
            if ct_load_i32(&w.alive) and ct_load_i64(&w.task_started_ns) != 0:
                active += 1
            for b in range(HIST_BUCKETS):
                hist[b] += w.hist[b]
        for b in range(HIST_BUCKETS):
            total += hist[b]
        return {
            "queue_sizes": tuple(ct_ring_size(&self._rings[i]) for i in range(N_LEVELS)),
            "total_workers": ct_load_i32(&self._live_workers),
            "active_workers": active,
            "processed": processed,
            "failed": failed + self._failed_outside,
            "succeeded": succeeded + self._succeeded_outside,
            "cancelled": self._cancelled_count,
            "busy_ns": busy,
            "avg_ns": exec_sum / total if total else 0.0,
            "p95_ns": _percentile(hist, total, 0.95),
            "p99_ns": _percentile(hist, total, 0.99),
            "uptime_ns": now - self._started_ns,
            "submitted": self._next_id - 1,
            "stuck_workers": self._stuck_workers(),
            "spawn_failures": self._spawn_failures,
        }

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
        ct_store_i32(&self._stopping, 1)
        ct_parker_notify_all(&self._parker)

    def _cancel_queued(self, str why):
        """Pop every queued task and cancel it; returns how many were cancelled."""
        cdef int lvl
        cdef int n = 0
        if not self._rings_ready:
            return 0
        for lvl in range(N_LEVELS):
            n += self._drain_ring(lvl, why)
        return n

    cdef int _drain_ring(self, int lvl, str why):
        cdef void *item
        cdef int n = 0
        cdef TaskHandle h
        while True:
            item = ct_ring_pop(&self._rings[lvl])
            if item == NULL:
                return n
            if CT_DEBUG:
                ct_add_i64(&_debug_counters[1], 1)
            if _is_native(item):
                h = <TaskHandle>_as_ncall(item).owner
            else:
                h = <TaskHandle><PyObject *>item
            Py_DECREF(h)
            if h._transition(ST_PENDING, ST_CANCELLED):
                h._finish_cancelled(why)
                n += 1

    cdef void _drain_ring_unlocked(self, int lvl) noexcept:
        cdef void *item
        while True:
            item = ct_ring_pop(&self._rings[lvl])
            if item == NULL:
                return
            if _is_native(item):
                Py_DECREF(<object>_as_ncall(item).owner)
            else:
                Py_DECREF(<object>item)

    # -- fork -------------------------------------------------------------------

    def _reset_after_fork(self, str why):
        """In a fork() child, where the parent's worker threads do not exist.

        Frees every worker slot (the calling thread's own, if it is one of this
        engine's workers, is marked abandoned: it exits after its current task), zeroes
        the counts of sleepers and waiters, rebuilds the rings (a parent thread may
        have been half-way through a push or a pop) and cancels with `why` every task
        of the parent: queued ones, and those still unfinished in the result store
        (running on the parent's workers, or on its event loop).
        """
        cdef int slot, lvl
        cdef int own = -1
        cdef ct_worker *w
        cdef ct_ring fresh
        entry = _worker_slots.get(threading.get_ident())
        if entry is not None and entry[0] is self:
            own = entry[1]
        keep = self._current[own] if own >= 0 else None   # goes on running here
        running = []
        for slot in range(MAX_WORKER_SLOTS):
            if slot == own:
                if slot != INLINE_SLOT:
                    ct_store_i32(&self._workers[slot].abandoned, 1)
                continue
            if self._current[slot] is not None:
                running.append(self._current[slot])
                self._current[slot] = None
            w = &self._workers[slot]
            ct_store_i32(&w.alive, 0)
            ct_store_i32(&w.abandoned, 0)
            w.task_started_ns = 0
            w.lent = 0
        ct_store_i32(&self._live_workers, 0)
        ct_store_i32(&self._retire_debt, 0)
        ct_store_i32(&self._surplus, 0)
        ct_store_i32(&self._reserved, 0)
        # the parker: no sleeper, no spinner, and its spinlock free (a parent thread
        # may have held it at the fork)
        ct_store_i32(&self._parker.lock, 0)
        ct_store_i32(&self._parker.sleepers, 0)
        ct_store_i32(&self._parker.wake_pending, 0)
        ct_store_i32(&self._parker.spinning, 0)
        ct_store_i32(&self._done.waiters, 0)
        ct_store_i32(&self._space.waiters, 0)
        ct_store_i32(&self._grower.waiters, 0)
        self._signal_producers = []
        self._spawn_lock = threading.Lock()
        for lvl in range(N_LEVELS):
            self._drain_ring(lvl, why)
            if ct_ring_init(&fresh, self._queue_size) != 0:
                raise MemoryError(f"cannot allocate a queue of {self._queue_size} slots")
            ct_ring_free(&self._rings[lvl])
            self._rings[lvl] = fresh
        for h in running:
            (<TaskHandle>h)._complete(ST_CANCELLED, _cancelled_error(h.task_id, why))
        if self._results is not None:
            for h in self._results:
                if h is not None and h is not keep and not h.done():
                    (<TaskHandle>h)._complete(ST_CANCELLED, _cancelled_error(h.task_id, why))

    def _queued(self):
        return sum(ct_ring_size(&self._rings[i]) for i in range(N_LEVELS))

    def _live(self):
        return ct_load_i32(&self._live_workers)


cdef double _percentile(uint64_t *hist, uint64_t total, double q) noexcept:
    cdef uint64_t rank, seen = 0
    cdef int b
    if total == 0:
        return 0.0
    rank = <uint64_t>(q * total)
    if rank >= total:
        rank = total - 1
    for b in range(HIST_BUCKETS):
        seen += hist[b]
        if seen > rank:
            return bucket_upper_ns(b)
    return bucket_upper_ns(HIST_BUCKETS - 1)


def _max_spinning():
    """Workers allowed to spin at once: half the cores this process may run on."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


# thread ident -> (core, slot) for current_task(); written by workers under the GIL
_worker_slots = {}


def current_handle():
    """The TaskHandle the calling worker thread runs now, or None."""
    entry = _worker_slots.get(threading.get_ident())
    if entry is None:
        return None
    return (<Core>entry[0])._current[entry[1]]


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
    return None if entry is None else entry[0]


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
