# Worker threads: their slots, spinning, parking, retiring and stand-ins.
#
# Included by pyx/_core.pyx (one extension module: every part is compiled
# together and calls the others directly); not compiled on its own.

cdef int _own_slot(Core self):
    """The calling thread's worker slot in this engine, or -1."""
    entry = _worker_slots.get(threading.get_ident())
    if entry is None or entry[0] != _address(self) or entry[1] == INLINE_SLOT:
        return -1
    return entry[1]


cdef bint _cancel_retire(Core self) noexcept:
    """Take back one pending retirement: the surplus worker stays (still reserved,
    now for a lender).  True if there was one."""
    cdef int32_t debt = ct_load_i32(&self._surplus)
    while debt > 0:
        if ct_cas_i32(&self._surplus, debt, debt - 1):
            return True
        debt = ct_load_i32(&self._surplus)
    return False


cdef int _running_workers(Core self, int except_slot) noexcept nogil:
    cdef int i
    cdef int n = 0
    for i in range(INLINE_SLOT):
        if i != except_slot and ct_load_i32(&self._workers[i].alive) \
                and not ct_load_i32(&self._workers[i].abandoned):
            n += 1
    return n


cdef int _running_slot(Core self, TaskHandle h):
    cdef int slot
    _check_ready(self)
    for slot in range(INLINE_SLOT):
        if self._current[slot] is h and ct_load_i32(&self._workers[slot].alive) \
                and not ct_load_i32(&self._workers[slot].abandoned):
            return slot
    return -1


cdef int _stuck_workers(Core self) noexcept:
    """Threads still inside a task they were abandoned in (time limit)."""
    cdef int i
    cdef int n = 0
    for i in range(INLINE_SLOT):
        if ct_load_i32(&self._workers[i].alive) and ct_load_i32(&self._workers[i].abandoned):
            n += 1
    return n


cdef inline bint _drained(Core self) noexcept nogil:
    """Shutdown: a worker may exit once no producer waits to queue a task it was
    accepted (read first: a producer pushes before it leaves) and every ring is
    empty."""
    return ct_load_i32(&self._stopping) and ct_load_i32(&self._space.waiters) == 0 \
        and _all_empty(self)


cdef bint _pay_surplus(Core self) noexcept nogil:
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


cdef void *_next_item(Core self, ct_worker *w, bint has_deferred) noexcept nogil:
    """Pop, spin, then nap (with a linger) or park; NULL means: exit (or flush
    deferred work first)."""
    cdef void *item = _wait_for_item(self, w, has_deferred)
    if item != NULL and self._linger_ns:
        w.took_ns = ct_now_ns()   # a stream: the next idle look naps (_wait_for_item)
    return item


cdef void *_wait_for_item(Core self, ct_worker *w, bint has_deferred) noexcept nogil:
    cdef void *item
    cdef int _spin
    cdef int64_t timeout
    cdef int64_t park_start, left
    cdef bint idle_timeout = False
    cdef bint woken
    cdef bint napped = False
    while True:
        item = _pop(self)
        if item != NULL:
            if napped and not _all_empty(self):
                ct_parker_notify_one(&self._parker)   # more came than one worker takes
            return item
        # spin only while fewer than max_spinning workers do (ct_park.h)
        if ct_parker_spin_begin(&self._parker):
            for _spin in range(w.spin_rounds):
                ct_cpu_relax()
                ct_cpu_relax()
                ct_cpu_relax()
                ct_cpu_relax()
                item = _pop(self)
                if item != NULL:
                    break
            ct_parker_spin_end(&self._parker)
            if item != NULL:
                w.spin_rounds = min(w.spin_rounds * 2, SPIN_MAX)
                return item
            w.spin_rounds = max(w.spin_rounds // 2, SPIN_MIN)
        if has_deferred:
            return NULL
        if _drained(self):
            ct_add_i32(&self._live_workers, -1)
            _pass_wake_on(self)
            return NULL
        if idle_timeout and (_pay_surplus(self) or _try_idle_retire(self)):
            _pass_wake_on(self)
            return NULL
        idle_timeout = False
        if self._linger_ns and ct_now_ns() - w.took_ns < self._linger_ns \
                and not ct_load_i32(&self._stopping):
            # a steady stream: nap instead of parking, so that producers need not
            # wake this worker for each task (one wake, one GIL take per batch)
            ct_add_i32(&self._napping, 1)
            ct_futex_wait(&w.nap, 0, self._linger_ns)
            ct_add_i32(&self._napping, -1)
            napped = True   # an empty nap lasts the linger: the next idle look parks
            continue
        napped = False
        # push, look again, sleep (protocol: ct_park.h)
        ct_parker_push(&self._parker, &w.park)
        item = _pop(self)
        if item != NULL or _drained(self):
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
                item = _pop(self)
        if item != NULL:
            if woken and not _all_empty(self):
                ct_parker_notify_one(&self._parker)   # pass the wake on
            return item


cdef inline void _pass_wake_on(Core self) noexcept nogil:
    """An exiting worker: work still queued goes to a sleeper (ct_park.h)."""
    if not _all_empty(self):
        ct_parker_notify_one(&self._parker)


cdef bint _try_idle_retire(Core self) noexcept nogil:
    """An idle worker of the base pool leaves if the pool is above _min_workers."""
    cdef int32_t live = ct_load_i32(&self._live_workers)
    while live - ct_load_i32(&self._reserved) > self._min_workers:
        if ct_cas_i32(&self._live_workers, live, live - 1):
            return True
        live = ct_load_i32(&self._live_workers)
    return False


cdef object _wait_workers_exit_impl(Core self, timeout):
    """Wait (GIL released) until every worker has exited, except the calling
    thread and workers abandoned after a time limit.  False on time-out."""
    cdef int64_t deadline = -1
    cdef int64_t end, now
    cdef uint32_t s
    cdef int own = -1
    cdef bint done = False
    cdef bint signals = _signals_here()
    entry = _worker_slots.get(threading.get_ident())
    if entry is not None and entry[0] == _address(self):
        own = entry[1]
    if timeout is not None:
        deadline = _deadline_ns(timeout)
    if signals:
        # called from a signal handler that interrupted this thread's own wait for
        # queue space: that producer must not keep the workers from exiting
        _release_signal_producers(self)
    while True:
        end = _slice_end(deadline, signals)
        with nogil:
            while True:
                s = ct_load_u32(&self._exited.seq)
                if _running_workers(self, own) == 0:
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


cdef object _replace_stuck_worker_impl(Core self, TaskHandle h, int max_stuck):
    """After a time limit: start a replacement for the worker stuck in `h`; the stuck
    thread then leaves the pool when `h` returns.  True if replaced.

    Bounded: at most `max_stuck` stuck threads at a time.  Past that bound, or when
    no thread can be started, the worker stays in the pool (it rejoins when its
    task returns) and the engine runs with fewer free workers meanwhile, never
    with none it could have kept.
    """
    cdef int slot = _running_slot(self, h)
    if slot < 0:
        return False
    if self._closed:
        # shutting down: no replacement, but shutdown does not wait for the thread
        ct_store_i32(&self._workers[slot].abandoned, 1)
        ct_add_i32(&self._live_workers, -1)
        return False
    if _stuck_workers(self) >= max_stuck:
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
    slot = _running_slot(self, h)
    if slot < 0:
        self._request_retire(1)   # it returned meanwhile: the replacement is surplus
        return False
    ct_store_i32(&self._workers[slot].abandoned, 1)
    # it no longer counts as a worker: not towards the pool size, not towards the
    # minimum that idle workers retire down to
    ct_add_i32(&self._live_workers, -1)
    return True


cdef inline void _publish_finished(Core self, ct_ncall **calls, int n) noexcept nogil:
    """Push this worker's `n` finished calls onto the shared stack as one chain."""
    cdef int i
    for i in range(n - 1):
        calls[i].next = calls[i + 1]
    ct_finished_push(&self._finished, calls[0], calls[n - 1])


cdef inline bint _hold_core(Core self, bint held) noexcept:
    """Before a Python section: the worker holds a reference to its core (once)."""
    if not held:
        Py_INCREF(self)
    return True


cdef inline bint _unhold_core(Core self, ct_worker *w) noexcept:
    """After a Python section: drop it, unless the worker was abandoned (stuck past a
    time limit): shutdown does not wait for it, so it keeps the core to its end."""
    if ct_load_i32(&w.abandoned):
        return True
    Py_DECREF(self)   # the last reference: Engine.__del__ runs here
    return False


def _worker_entry(size_t core, int slot):
    """A worker thread's target: its engine by address (see _worker_loop)."""
    _worker_loop(<Core><PyObject *>core, slot)


cdef object _worker_loop(Core self, int slot):
    """A worker thread's whole life: the nogil loop, GIL only at _gil_section.

    A worker holds no reference to its engine while it waits, so that an engine
    nobody refers to any more is collected, as a ThreadPoolExecutor is.  The
    invariant that makes the borrowed `self` safe: the core is alive while any of
    its worker slots is alive.  Whoever drops the last reference to an engine with
    live workers runs ``Engine.__del__``, whose ``shutdown(wait=False)`` keeps the
    engine (its thread holds it) until every worker that is not stuck has left; a
    stuck (abandoned) worker holds a reference from its last Python section to its
    end.  `self` is borrowed (the thread's target passes an address); each Python
    section holds a reference.
    """
    cdef ct_worker *w = &self._workers[slot]
    cdef void *item = NULL
    cdef ct_ncall *call
    cdef ct_ncall *deferred[NATIVE_DEFER_MAX]
    cdef int ndeferred = 0
    # deferred calls this worker finishes itself under the GIL: handed back to Python
    # (CT_RC_PYTHON), or with a done-callback (ct_ncall.callbacks)
    cdef int kept = 0
    cdef int64_t first_deferred_ns = 0
    cdef int64_t now
    cdef bint flush
    cdef int64_t t0, t1
    cdef int32_t rc
    cdef bint held = False   # this frame holds a reference to self
    try:
        # inside the try: whatever fails here, the slot is freed and shutdown
        # does not wait for a worker that never ran
        _worker_slots[threading.get_ident()] = (_address(self), slot)
        self._own_thread()
        w.native = NULL
        w.held = deferred
        ct_store_release_i32(&w.nheld, 0)
        with nogil:
            while True:
                if item == NULL:
                    # Finished natives go to the shared stack, where the next thread
                    # that holds the GIL anyway finishes them (ct_finished): a worker
                    # takes the GIL for them only when idle, or for calls it must
                    # finish itself (`kept`: handed back to Python, or with a
                    # done-callback, which runs on this thread, at once if no task is
                    # queued, else within NATIVE_FLUSH_NS).  Waiting for the GIL for
                    # each batch while a producer holds it throttled native tasks to
                    # one batch per switch interval.
                    flush = False
                    if ndeferred > 0:
                        now = ct_now_ns()
                        if kept > 0:
                            flush = (ndeferred >= NATIVE_DEFER_MAX
                                     or now - first_deferred_ns > NATIVE_FLUSH_NS
                                     or _all_empty(self))
                        elif (ndeferred >= NATIVE_DEFER_MAX
                                or now - first_deferred_ns > NATIVE_FLUSH_NS):
                            # result() and done() read the published status: only
                            # the queue's references wait for the bookkeeping
                            ct_store_release_i32(&w.nheld, 0)   # before the push
                            _publish_finished(self, deferred, ndeferred)
                            ndeferred = 0
                    if not flush:
                        item = _next_item(self, w, ndeferred > 0
                                          or ct_finished_any(&self._finished))
                        if item == NULL:
                            if ndeferred == 0 and not ct_finished_any(&self._finished):
                                break
                            flush = True   # idle: finish them before parking or exiting
                    if flush:
                        # GIL: finish the natives, run the handed-back ones
                        with gil:
                            held = _hold_core(self, held)
                            try:
                                item = _gil_section(self, w, slot, NULL, deferred,
                                                    ndeferred)
                            finally:
                                held = _unhold_core(self, w)
                        ndeferred = 0
                        kept = 0
                        continue
                if _is_native(item):
                    call = _as_ncall(item)
                    item = NULL
                    ct_store_release_ncall(&w.native, call)   # for a fork child
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
                        _account(self, w, t1 - t0, rc != CT_RC_OK and rc != CT_RC_PYTHON)
                        if rc == CT_RC_OK:
                            ct_bump_i64(&w.succeeded, 1)
                        if rc != CT_RC_PYTHON:
                            ct_store_i32(&call.status,
                                         ST_SUCCEEDED if rc == CT_RC_OK else ST_FAILED)
                            ct_waitset_notify(&self._done)
                    if ndeferred == 0:
                        first_deferred_ns = ct_now_ns()
                    # after the status store (Dekker with add_done_callback)
                    if call.rc == CT_RC_PYTHON or ct_load_i32(&call.callbacks):
                        kept += 1   # its Python run or callbacks need this worker
                    deferred[ndeferred] = call
                    ndeferred += 1
                    ct_store_release_i32(&w.nheld, ndeferred)   # after the entry
                    ct_store_release_ncall(&w.native, NULL)   # once counted in held
                    continue
                # the one marked point where a worker takes the GIL for Python tasks
                if self._gil_share < 1.0:
                    _polite_pause(self)
                with gil:
                    held = _hold_core(self, held)
                    try:
                        item = _gil_section(self, w, slot, item, deferred, ndeferred)
                    finally:
                        held = _unhold_core(self, w)
                ndeferred = 0
                kept = 0
                if ct_load_i32(&w.abandoned):
                    # a replacement took this slot's place; hand back any popped item.
                    # Shutdown does not wait for this thread: it keeps its reference
                    if item != NULL:
                        with gil:
                            ct_store_release_ncall(&w.native, NULL)   # queued again
                            _requeue(self, item)
                    break   # _replace_stuck_worker already took it off _live_workers
    finally:
        try:
            _worker_slots.pop(threading.get_ident(), None)
            self._own_thread(False)
            self._current[slot] = None
            w.native = NULL
            w.nheld = 0
        finally:   # the slot is free, and shutdown sees it, whatever happened above
            # Once alive is 0 the core may be freed, but only by a thread holding the
            # GIL: this one holds it from here to its return and runs no Python code,
            # so the stores below still land in a live core.
            ct_store_i32(&w.alive, 0)
            ct_add_i32(<int32_t *>&self._exited.seq, 1)
            ct_futex_wake_all(&self._exited.seq)
            if held:
                Py_DECREF(self)   # a stuck worker's: the last touch of self


cdef object _reset_after_fork_impl(Core self, str why):
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
    cdef int i
    cdef TaskHandle th
    entry = _worker_slots.get(threading.get_ident())
    if entry is not None and entry[0] == _address(self):
        own = entry[1]
    keep = self._current[own] if own >= 0 else None   # goes on running here
    running = []
    held = []   # native handles a parent worker took and the engine never finished
    for slot in range(MAX_WORKER_SLOTS):
        if slot == own:
            if slot != INLINE_SLOT:
                ct_store_i32(&self._workers[slot].abandoned, 1)
            continue
        if self._current[slot] is not None:
            running.append(self._current[slot])
            self._current[slot] = None
        w = &self._workers[slot]
        if ct_load_i32(&w.alive):
            # its stack (the `held` array) was copied into this process with the rest
            for i in range(w.nheld):
                held.append(<TaskHandle>w.held[i].owner)
            if w.native != NULL and (w.nheld == 0 or w.native != w.held[w.nheld - 1]):
                held.append(<TaskHandle>w.native.owner)
        w.native = NULL
        w.nheld = 0
        ct_store_i32(&w.alive, 0)
        ct_store_i32(&w.abandoned, 0)
        w.task_started_ns = 0
        w.lent = 0
        w.nap = 0
    ct_store_i32(&self._live_workers, 0)
    ct_store_i32(&self._surplus, 0)
    ct_store_i32(&self._reserved, 0)
    # the parker: no sleeper, no spinner, and its spinlock free (a parent thread
    # may have held it at the fork)
    ct_store_i32(&self._parker.lock, 0)
    ct_store_i32(&self._parker.sleepers, 0)
    ct_store_i32(&self._parker.wake_pending, 0)
    ct_store_i32(&self._parker.spinning, 0)
    ct_store_i32(&self._napping, 0)
    ct_store_i32(&self._done.waiters, 0)
    ct_store_i32(&self._space.waiters, 0)
    ct_store_i32(&self._grower.waiters, 0)
    self._signal_producers = []
    self._spawn_lock = threading.Lock()
    for lvl in range(N_LEVELS):
        _drain_ring(self, lvl, why)
        if ct_ring_init(&fresh, self._queue_size) != 0:
            raise MemoryError(f"cannot allocate a queue of {self._queue_size} slots")
        ct_ring_free(&self._rings[lvl])
        self._rings[lvl] = fresh
    # calls the parent's workers finished and published: they ended there, keep
    # their results
    _drain_finished(self)
    # calls a parent worker held: the reference it held is this list's now; one that
    # ended keeps its result and gets its callbacks, one that did not is cancelled
    for th in held:
        Py_DECREF(th)
        if th._load_status() >= ST_SUCCEEDED:
            th._release_call()
            th._done_published_native()
        else:
            th._complete(ST_CANCELLED, _cancelled_error(th.task_id, why))
    for h in running:
        (<TaskHandle>h)._complete(ST_CANCELLED, _cancelled_error(h.task_id, why))
    if self._results is not None:
        for h in self._results:
            if h is not None and h is not keep and not h.done():
                (<TaskHandle>h)._complete(ST_CANCELLED, _cancelled_error(h.task_id, why))
