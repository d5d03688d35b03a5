# Native (compiled) tasks: finishing them under the GIL, the Python fallback.
#
# Included by pyx/_core.pyx (one extension module: every part is compiled
# together and calls the others directly); not compiled on its own.

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
