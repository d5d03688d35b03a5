# Submission and the four priority rings: push, wait for space, pop, drain.
#
# Included by pyx/_core.pyx (one extension module: every part is compiled
# together and calls the others directly); not compiled on its own.

cdef int _check_ready(Core self) except -1:
    if not self._rings_ready:
        raise RuntimeError(
            f"{type(self).__name__}.__init__ did not run Engine.__init__: call "
            f"super().__init__(...) in your subclass's __init__")
    return 0


cdef TaskHandle _new_handle(Core self, fn, tuple args, dict kwargs, int prio,
                            TaskOptions options):
    # one well-predicted branch on the submit path for three rare misuses: an
    # engine whose __init__ never ran, a priority outside the rings, a generator
    if not self._rings_ready or <unsigned int>prio >= N_LEVELS \
            or _is_generator_function(fn):
        _check_ready(self)
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


cdef TaskHandle _submit(Core self, fn, tuple args, dict kwargs, int prio, TaskOptions options):
    cdef TaskHandle h = _new_handle(self, fn, args, kwargs, prio, options)
    _enqueue(self, h)
    _drain_if_finished(self)
    return h


cdef int _enqueue(Core self, TaskHandle h, double wait=-1.0) except -1:
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
            rc = _wait_for_space_lending(
                self, ring, item, wait if wait >= 0 else self._submit_timeout)
        except BaseException:
            # a signal handler raised (Ctrl-C): the task was never queued
            Py_DECREF(h)
            _cancel_unqueued(
                self, h, "was not queued: submit() was interrupted while it waited for space")
            raise
        if rc != SPACE_PUSHED:
            Py_DECREF(h)
            if rc == SPACE_TIMED_OUT:
                if wait >= 0:
                    return 0   # still PENDING: the caller pushes it later
                _overflow(self, h)
            _cancel_unqueued(self, h, self._abort_why if rc == SPACE_ABORTED else
                             "was not queued: the engine shut down while submit() "
                             "waited for queue space")
            return 1   # ended (cancelled): nothing left to push
    if ct_load_i32(&self._space_abort):
        # shutdown may have emptied the rings just before this push landed
        self._cancel_queued(self._abort_why)
    if CT_DEBUG:
        ct_add_i64(&_debug_counters[0], 1)
    if ct_load_i32(&self._napping):
        return 1   # a napper takes it when its nap ends: no wake, and no worker to add
    ct_parker_notify_one(&self._parker)
    if ct_load_i32(&self._grower.waiters) and not ct_load_i32(&self._parker.sleepers):
        _poke_grower(self)
    return 1


cdef void _poke_grower(Core self) noexcept:
    """Work was queued and no worker is idle: wake the auto-scaler, once."""
    if ct_xchg_i32(&self._grower.waiters, 0) == 1:
        ct_add_i32(<int32_t *>&self._grower.seq, 1)
        ct_futex_wake_all(&self._grower.seq)


cdef int _wait_for_space_lending(Core self, ct_ring *ring, void *item,
                                 double timeout) except -1:
    """_wait_for_space, but a worker of this engine (a task submitting children, a
    retry) lends its slot to a stand-in while it waits: it would otherwise wait for
    itself, and with every worker waiting so, forever.  Without a stand-in (thread
    limit) it does not wait: the push fails (QueueFull).  Returns a SPACE_ code."""
    if timeout == 0 or _own_slot(self) < 0:
        return _wait_for_space(self, ring, item, timeout)
    if not self._lend_slot():
        return SPACE_TIMED_OUT
    try:
        return _wait_for_space(self, ring, item, timeout)
    finally:
        self._return_slot()


cdef int _wait_for_space(Core self, ct_ring *ring, void *item, double timeout) except -1:
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
            rc = _space_slice(self, ring, item, deadline, signals)
        if rc == SPACE_WAIT:
            rc = _space_check_signals(self)
            if rc == SPACE_STOPPED:
                return rc   # released (unregistered) by a shutdown in the handler
    _space_left(self)
    return rc


cdef int _space_check_signals(Core self) except -1:
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
            _space_left(self)
        raise
    finally:
        for i in range(len(self._signal_producers) - 1, -1, -1):
            if self._signal_producers[i] is marker:   # by identity: [False] == [False]
                del self._signal_producers[i]
                break
    return SPACE_STOPPED if marker[0] else SPACE_WAIT


cdef void _release_signal_producers(Core self) noexcept:
    cdef list marker
    for marker in self._signal_producers:
        if not marker[0]:
            marker[0] = True
            _space_left(self)


cdef int _space_slice(Core self, ct_ring *ring, void *item, int64_t deadline,
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


cdef void _space_left(Core self) noexcept:
    """A producer stops waiting for space: stopping workers may exit now."""
    ct_add_i32(&self._space.waiters, -1)
    if ct_load_i32(&self._stopping):
        ct_parker_notify_all(&self._parker)


cdef void _cancel_unqueued(Core self, TaskHandle h, str why) noexcept:
    """A task that never got into a ring ends cancelled (unless it already ended)."""
    if h._transition(ST_PENDING, ST_CANCELLED):
        h._finish_cancelled(why)


cdef void _overflow(Core self, TaskHandle h) except *:
    exc = _queue_full(
        f"priority {_priority_enum(h._priority).name} queue is full "
        f"({self._queue_size} tasks) and stayed full for submit_timeout="
        f"{self._submit_timeout if self._submit_timeout >= 0 else None} s; "
        f"raise queue_size or submit_timeout, or submit more slowly")
    exc.handle = h
    h._complete(ST_FAILED, exc)
    raise exc


cdef void _requeue(Core self, void *item) noexcept:
    """Push back an item this worker popped but will not run (it is exiting)."""
    cdef TaskHandle h
    if _is_native(item):
        h = <TaskHandle>_as_ncall(item).owner
    else:
        h = <TaskHandle><PyObject *>item
    try:
        _enqueue(self, h)
    except BaseException as exc:
        _report_unraisable(exc, f"requeueing task {h.task_id}")
    Py_DECREF(h)   # the reference the popped item carried


cdef inline bint _all_empty(Core self) noexcept nogil:
    cdef int lvl
    for lvl in range(N_LEVELS):
        if ct_ring_size(&self._rings[lvl]) != 0:
            return False
    return True


cdef inline void *_pop(Core self) noexcept nogil:
    """The oldest item of the highest non-empty level, or NULL.

    With a starvation limit, a level that was passed over that many times is
    served first (see _pop_aging)."""
    cdef void *item
    cdef int lvl
    if self._starvation_limit:
        return _pop_aging(self)
    for lvl in range(N_LEVELS):
        item = ct_ring_pop(&self._rings[lvl])
        if item != NULL:
            if ct_load_i32(&self._space.waiters) > 0:
                ct_waitset_notify(&self._space)
            return item
    return NULL


cdef void *_pop_aging(Core self) noexcept nogil:
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


cdef int _drain_ring(Core self, int lvl, str why):
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


cdef void _drain_ring_unlocked(Core self, int lvl) noexcept:
    cdef void *item
    while True:
        item = ct_ring_pop(&self._rings[lvl])
        if item == NULL:
            return
        if _is_native(item):
            Py_DECREF(<object>_as_ncall(item).owner)
        else:
            Py_DECREF(<object>item)
