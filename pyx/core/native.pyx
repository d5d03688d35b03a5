# Native (compiled) tasks: finishing them under the GIL, the Python fallback.
#
# Included by pyx/_core.pyx (one extension module: every part is compiled
# together and calls the others directly); not compiled on its own.

cdef TaskHandle _push_native(Core self, uintptr_t address, const ct_slot *packed,
                             Py_ssize_t n, tuple args, char result_kind, int priority,
                             fallback):
    """Create and queue a native task for packed, validated arguments."""
    global _ncall_nfree
    cdef ct_ncall *call
    if _ncall_nfree > 0:
        _ncall_nfree -= 1
        call = _ncall_free[_ncall_nfree]
    else:
        call = <ct_ncall *>malloc(sizeof(ct_ncall))
        if call == NULL:
            raise MemoryError()
    call.owner = NULL
    call.fn = <ct_native_fn>address
    call.status = ST_PENDING
    call.rc = 0
    call.nargs = <int32_t>n
    call.callbacks = 0
    call.result.i = 0
    call.next = NULL
    memcpy(call.args, packed, n * sizeof(ct_slot))
    try:
        h = _new_handle(self, fallback, args, None, priority, None)
    except BaseException:
        free(call)
        raise
    h._ncall = call
    h._result_kind = result_kind
    call.owner = <PyObject *>h
    _enqueue(self, h)
    _drain_if_finished(self)
    return h


cdef inline void _drain_if_finished(Core self) noexcept:
    """Under the GIL, on the submit path: take the workers' finished calls, if any."""
    if ct_finished_any(&self._finished):
        _drain_finished(self)


cdef void _drain_finished(Core self) noexcept:
    """Under the GIL: the bookkeeping of every native call that workers published
    (ct_finished): drop the queue's reference to its handle, materialize.

    Every call here ran to its end (or was cancelled while queued) and has no
    done-callback: a call handed back to Python (CT_RC_PYTHON) or with a callback is
    never published, its worker finishes it (ct_ncall.callbacks).
    """
    cdef ct_ncall *call = ct_finished_take(&self._finished)
    cdef ct_ncall *after
    cdef TaskHandle h
    while call != NULL:
        after = call.next   # read first: the handle's last reference may go below
        h = <TaskHandle>call.owner
        Py_DECREF(h)   # the queue's reference; `h` keeps one until reassigned
        h._release_call()
        h._done_published_native()
        call = after


cdef void _finish_native(Core self, TaskHandle h, int slot) noexcept:
    cdef ct_ncall *call = h._ncall
    if call.rc == CT_RC_PYTHON and ct_load_i32(&call.status) == ST_RUNNING:
        # the native code handed this call back: run the Python function
        _run_fallback(self, h, slot)
        return
    h._release_call()
    h._done_published_native()


cdef void _run_fallback(Core self, TaskHandle h, int slot) noexcept:
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
