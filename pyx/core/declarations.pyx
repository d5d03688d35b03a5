# C declarations, constants and small helpers shared by every part of the core.
#
# Included by pyx/_core.pyx (one extension module: every part is compiled
# together and calls the others directly); not compiled on its own.

cdef extern from "Python.h":
    ctypedef struct PyFrameObject
    int PyFrame_GetLasti(PyFrameObject *frame)
    void PyObject_GC_Track(void *op)
    void PyObject_GC_UnTrack(void *op)
    int PyObject_GC_IsTracked(object op)
    bint PyLong_CheckExact(object op)
    bint PyFloat_CheckExact(object op)
    double PyFloat_AS_DOUBLE(object op)
    long long PyLong_AsLongLongAndOverflow(object op, int *overflow) except? -1
    PyObject *PyTuple_GET_ITEM(object op, Py_ssize_t i)

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
    void ct_store_u32 "ct_store_seqcst"(uint32_t *p, uint32_t v) noexcept nogil

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
        int32_t callbacks
        ct_slot result
        ct_slot args[8]
        ct_ncall *next
    ctypedef struct ct_finished:
        ct_ncall *head
    void ct_finished_push(ct_finished *f, ct_ncall *first, ct_ncall *last) noexcept nogil
    ct_ncall *ct_finished_take(ct_finished *f) noexcept nogil
    bint ct_finished_any(const ct_finished *f) noexcept nogil
    void ct_store_release_i32(int32_t *p, int32_t v) noexcept nogil
    void ct_store_release_ncall(ct_ncall **p, ct_ncall *v) noexcept nogil

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


# Native calls freed by TaskHandle.__dealloc__, kept for _push_native to reuse (a
# release build): both run under the GIL (this module is not free-threading
# compatible), which guards the stack; no atomics.
cdef enum:
    NCALL_FREE_MAX = 256
cdef ct_ncall *_ncall_free[NCALL_FREE_MAX]
cdef int _ncall_nfree = 0


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
# Per-worker state

ctypedef struct ct_worker:
    # Every field is written only by the worker that owns the slot (relaxed atomics);
    # stats() and the supervisor read them as snapshots that may be slightly stale.
    int64_t processed        # tasks finished by this slot (all outcomes)
    int64_t failed           # tasks that ended FAILED on this slot
    int64_t succeeded        # tasks that ended SUCCEEDED on this slot
    int64_t busy_ns          # time spent running tasks
    int64_t task_started_ns  # start of the current task, 0 while not running one
    int64_t exec_ns_sum      # sum of task run times, for the average
    # when this worker last took an item off the rings (ct_now_ns); only its worker
    # touches it: with a linger, an idle worker that took one this recently naps
    int64_t took_ns
    uint64_t hist[HIST_BUCKETS]  # task run times, log-scale buckets
    # The native calls this worker took off the rings and the engine has not finished,
    # for a fork child, where the worker does not exist (_reset_after_fork_impl ends
    # them): `native`, the one it runs (set when it takes it, NULL once it is in
    # `held`); `held[0:nheld]`, the ones it ran and keeps until its next GIL visit
    # (its `deferred` array; `held` moves past each call its GIL section finishes).
    # Release stores by the worker (ct_store_release_*): a count covers only entries
    # already written, and a call leaves `native` only after it is counted in `held`;
    # `nheld` is 0 before the worker publishes or finishes them.  A fork child sees
    # each parent thread's stores up to some point in program order; a call taken
    # off a ring in the few instructions before `native` records it is lost there
    # (it stays PENDING unless the result store holds it, as a Python task taken
    # off a ring before its worker got the GIL does).
    ct_ncall *native
    ct_ncall **held
    int32_t nheld
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
    # a napping worker's timed sleep (futex word): 0 while the engine runs (producers
    # never wake a napper); _stop_workers stores 1 (SEQ_CST, after _stopping) and wakes
    # it, and a nap that begins after that store returns at once
    uint32_t nap
    char _pad[32]


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
