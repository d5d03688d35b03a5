# Running Python tasks under the GIL, and sharing the GIL with the application.
#
# Included by pyx/_core.pyx (one extension module: every part is compiled
# together and calls the others directly); not compiled on its own.

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


cdef void *_gil_section(Core self, ct_worker *w, int slot, void *item,
                        ct_ncall **deferred, int ndeferred) noexcept:
    """Under the GIL: finish natives (published and this worker's deferred), then
    run Python tasks while there are any.  Returns a popped native item for the
    nogil loop, or NULL."""
    cdef int i
    cdef int n = 0
    cdef int64_t t_start
    cdef int64_t cpu_start = 0
    cdef bint governed = self._gil_share < 1.0
    cdef bint polite = False
    cdef PyObject *owner
    cdef TaskHandle h
    if ct_finished_any(&self._finished):
        _drain_finished(self)
    for i in range(ndeferred):
        # a fork in a callback below leaves the child the calls after this one
        w.held = &deferred[i + 1]
        ct_store_release_i32(&w.nheld, ndeferred - i - 1)
        owner = deferred[i].owner
        h = <TaskHandle>owner
        Py_DECREF(h)   # the queue's reference; `h` keeps one until reassigned
        _finish_native(self, h, slot)
    w.held = deferred
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
            ct_store_release_ncall(&w.native, _as_ncall(item))   # for a fork child
            return item
        h = <TaskHandle><PyObject *>item
        Py_DECREF(h)   # drop the queue's reference
        if CT_DEBUG:
            ct_add_i64(&_debug_counters[1], 1)
        _run_python(self, w, slot, h)
        if ct_load_i32(&w.abandoned):
            return NULL
        n += 1
        if polite:
            # a slice ends by the clock (cheap) and is charged its CPU time: a
            # task blocked in I/O holds no GIL and costs no pause
            if ct_now_ns() - t_start >= POLITE_SLICE_NS:
                _charge_polite(self, ct_thread_cpu_ns() - cpu_start)
                _app_moved(self)   # still running?  keeps the workers polite
                return NULL   # the nogil loop pauses before the next Python task
        elif n >= BATCH_MAX or ct_now_ns() - t_start > BATCH_NS:
            _gil_yield()
            if governed and _app_moved(self):
                return NULL   # turn polite: pause before the next Python task
            t_start = ct_now_ns()
            n = 0
        item = _pop(self)
        if item == NULL:
            return NULL


cdef bint _app_moved(Core self) noexcept:
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


cdef void _charge_polite(Core self, int64_t used_ns) noexcept:
    """A polite worker ran `used_ns` of Python work: push the next start back."""
    cdef int64_t now = ct_now_ns()
    cdef int64_t nxt = ct_load_i64(&self._polite_next_ns)
    if nxt < now:
        nxt = now
    nxt += <int64_t>(used_ns * (1.0 - self._gil_share) / self._gil_share)
    ct_store_i64(&self._polite_next_ns, nxt)


cdef void _polite_pause(Core self) noexcept nogil:
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


cdef void _run_python(Core self, ct_worker *w, int slot, TaskHandle h) noexcept:
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
        _on_timed_end(self, limit)   # the attempt returned: drop its expiry at once
    t1 = ct_now_ns()
    w.task_started_ns = 0
    self._current[slot] = None
    if error is not None:
        retried = _try_retry(self, h, error)
        # a task timed out or cancelled meanwhile is not counted as this run's failure
        _account(self, w, t1 - t0, not retried and ct_load_i32(&h._status) == ST_RUNNING)
        if not retried:
            h._complete_failed_by_worker(error)
        return
    _account(self, w, t1 - t0, False)
    if type(value) is _CoroutineType:
        _hand_to_loop(self, h, value)
    else:
        # expected=RUNNING: a time limit may have failed the handle meanwhile
        if h._complete(ST_SUCCEEDED, value, ST_RUNNING, False):
            ct_bump_i64(&w.succeeded, 1)


cdef bint _try_retry(Core self, TaskHandle h, BaseException exc) noexcept:
    """A task raised: True if the engine's retry policy queued it again."""
    try:
        if h.options is not None and h.options.retries > 0 \
                and h._attempts <= h.options.retries \
                and not h._cancel_requested:
            return self._on_retry(h, exc)
    except BaseException as internal:
        _report_unraisable(internal, f"the retry policy of task {h.task_id}")
    return False


cdef void _hand_to_loop(Core self, TaskHandle h, coro) noexcept:
    try:
        self._on_coroutine(h, coro)
    except BaseException as exc:
        coro.close()
        h._complete(ST_FAILED, exc)


cdef void _on_timed_end(Core self, limit) noexcept:
    try:
        limit.cancel()
    except BaseException as exc:
        _report_unraisable(exc, "cancelling a time limit")
