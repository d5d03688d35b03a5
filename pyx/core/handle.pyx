# Task options and task handles: the submitter's view of one task.
#
# Included by pyx/_core.pyx (one extension module: every part is compiled
# together and calls the others directly); not compiled on its own.

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
        global _ncall_nfree
        if self._ncall != NULL:
            if not CT_DEBUG and _ncall_nfree < NCALL_FREE_MAX:
                _ncall_free[_ncall_nfree] = self._ncall
                _ncall_nfree += 1
            else:
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
            _account_cancel(self._core)
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
                _account_succeeded(self._core)
        elif status == ST_FAILED:
            if count:
                _account_failed_outside(self._core)
        else:
            _account_cancel(self._core)
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
        # allocate before the status is read: an allocation may run the garbage
        # collector, whose finalizers may let go of the GIL, and a task that ended
        # meanwhile would have found no list to run (the callback was lost).  From the
        # status load to the append below nothing runs Python code.
        first = [fn]
        if self._ncall != NULL:
            # before the status load: a worker that then stores the terminal status
            # sees it and finishes the call itself (ct_ncall.callbacks)
            ct_store_i32(&self._ncall.callbacks, 1)
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
            self._callbacks = first
        else:
            self._callbacks.append(fn)   # a resize (PyMem_Realloc) runs no collection

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
