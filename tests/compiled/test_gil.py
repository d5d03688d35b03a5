"""A compiled task runs while another thread holds the GIL the whole time.

The main thread sets the GIL switch interval to 30 s and then spins in Python,
never releasing the GIL, until the native task's handle reports done.  If the
native task needed the GIL at any point, it could not finish before the main
thread gave the GIL up (30 s later); it finishes within the spin instead.  The
timestamps show the overlap: the task's run lies inside the spin.
"""

from __future__ import annotations

import sys
import time

import pytest

import compiled_corpus as corpus
import cytask
from cytask.compiler import compile_task


@pytest.mark.timeout(90)
def test_native_task_runs_while_main_thread_holds_the_gil() -> None:
    ct = compile_task(corpus.busy_walk)
    assert ct.native is not None
    n = 100_000_000  # ~0.1-0.3 s of native work that cannot be folded away
    with cytask.Engine(workers=1) as eng:
        entry = ct.native
        # warm up, then wait until the worker has parked in its nogil loop: the handle
        # is done before the worker has finished the batch's bookkeeping (with the
        # GIL), which a 30 s switch interval would otherwise hold up
        warm = eng.submit_native(entry.address, (10,), entry.arg_kinds, entry.result_kind)
        assert warm.result(timeout=30) == corpus.busy_walk(10)
        deadline = time.monotonic() + 10
        while eng._idle_workers() < 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert eng._idle_workers() == 1
        old = sys.getswitchinterval()
        sys.setswitchinterval(30.0)
        try:
            t0 = time.perf_counter()
            h = eng.submit_native(entry.address, (n,), entry.arg_kinds, entry.result_kind)
            spins = 0
            while not h.done() and time.perf_counter() - t0 < 20.0:
                spins += 1  # pure Python: the GIL stays with this thread
            t1 = time.perf_counter()
        finally:
            sys.setswitchinterval(old)
        assert h.done(), "the native task did not finish while the GIL was held"
        assert t1 - t0 < 10.0
        assert spins > 1000  # the main thread ran Python during the whole task
        result = h.result(timeout=30)
        assert isinstance(result, int)
