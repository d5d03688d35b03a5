"""Native tasks: C function pointers run by the workers with no GIL."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import itertools
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cytask import Engine, Priority, TaskStatus


def test_native_results_by_kind(engine: Engine, native_lib) -> None:  # type: ignore[no-untyped-def]
    h = engine.submit_native(native_lib.address("add_i64"), (2**40, 5), b"ii", b"i")
    assert h.result(timeout=10) == 2**40 + 5
    h = engine.submit_native(native_lib.address("scale"), (3, 0.5), b"id", b"d")
    assert h.result(timeout=10) == 1.5
    assert h.status is TaskStatus.SUCCEEDED


def test_native_error_code_maps_to_python_exception(engine: Engine, native_lib) -> None:  # type: ignore[no-untyped-def]
    h = engine.submit_native(native_lib.address("checked_div"), (1, 0), b"ii", b"i")
    with pytest.raises(ZeroDivisionError):
        h.result(timeout=10)
    assert h.status is TaskStatus.FAILED
    assert (
        engine.submit_native(native_lib.address("checked_div"), (7, 2), b"ii", b"i").result(
            timeout=10
        )
        == 3
    )


def test_native_hand_back_runs_python_fallback(engine: Engine, native_lib) -> None:  # type: ignore[no-untyped-def]
    h = engine.submit_native(
        native_lib.address("hand_back"), (6, 7), b"ii", b"i", fallback=lambda a, b: a * b
    )
    assert h.result(timeout=10) == 42
    assert h.status is TaskStatus.SUCCEEDED


def test_native_task_runs_without_the_gil(native_lib) -> None:  # type: ignore[no-untyped-def]
    """While a native task spins 0.2 s, the main thread keeps running Python code."""
    duration_ns = 200_000_000
    with Engine(workers=1) as eng:
        h = eng.submit_native(native_lib.address("spin_ns"), (duration_ns,), b"i", b"i")
        stamps = []
        while not h.done():
            stamps.append(time.monotonic_ns())  # Python bytecode: needs the GIL
        start = h.result(timeout=10)
    window = [t for t in stamps if start <= t <= start + duration_ns]
    assert window, "the main thread never ran while the native task spun"
    covered = window[-1] - window[0]
    largest_gap = max(b - a for a, b in itertools.pairwise(window))
    # a GIL-holding task would freeze the loop for the whole 0.2 s
    assert covered > 0.8 * duration_ns
    assert largest_gap < 0.25 * duration_ns


def test_cancel_queued_native_task(native_lib) -> None:  # type: ignore[no-untyped-def]
    with Engine(workers=1) as eng:
        gate = threading.Event()
        started = threading.Event()
        eng.submit(lambda: (started.set(), gate.wait()))
        assert started.wait(10)
        h = eng.submit_native(native_lib.address("add_i64"), (1, 2), b"ii", b"i")
        assert h.cancel() is True
        gate.set()
    assert h.status is TaskStatus.CANCELLED


def test_native_priority_and_many_tasks(native_lib) -> None:  # type: ignore[no-untyped-def]
    addr = native_lib.address("add_i64")
    with Engine(workers=2) as eng:
        handles = [
            eng.submit_native(addr, (i, i), b"ii", b"i", priority=int(Priority.HIGH))
            for i in range(50_000)
        ]
    assert [h.result(timeout=0) for h in handles] == [2 * i for i in range(50_000)]


def test_done_callback_runs_for_native_task(native_lib) -> None:  # type: ignore[no-untyped-def]
    seen = []
    done = threading.Event()
    with Engine(workers=1) as eng:
        h = eng.submit_native(native_lib.address("spin_ns"), (10_000_000,), b"i", b"i")
        h.add_done_callback(lambda handle: (seen.append(handle.status), done.set()))
        assert done.wait(10)
    assert seen == [TaskStatus.SUCCEEDED]


@contextlib.contextmanager
def _gil_kept_for(seconds: float) -> Iterator[None]:
    """The running thread keeps the GIL: no other thread asks it back sooner."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def test_native_tasks_never_wait_for_a_thread_that_keeps_the_gil(native_lib) -> None:  # type: ignore[no-untyped-def]
    """A worker finishes a backlog of native tasks while this thread keeps the GIL.

    The worker is held in a gate task while 20 of its bookkeeping batches (256 calls)
    are queued; then this thread opens the gate and watches, never letting go of the
    GIL (a 60 s switch interval, pure-Python loop).  Before, the worker stopped after
    one batch to take the GIL, here for the whole minute.
    """
    gate = ctypes.c_int32(0)
    add = native_lib.address("add_i64")
    with Engine(workers=1) as eng:
        # a Python task: the worker is up, and leaves its GIL section with nothing
        # left to finish (a native's bookkeeping would make it ask for the GIL)
        eng.submit(int).result(timeout=10)
        with _gil_kept_for(60.0):
            g = eng.submit_native(
                native_lib.address("wait_gate"), (ctypes.addressof(gate),), b"i", b"i"
            )
            hs = [eng.submit_native(add, (i, 1), b"ii", b"i") for i in range(20 * 256)]
            gate.value = 1
            deadline = time.monotonic() + 10
            while not hs[-1].done() and time.monotonic() < deadline:
                pass
            finished = sum(h.done() for h in hs)
        assert finished == len(hs)
        assert g.result(timeout=10) == 0
        assert [h.result(timeout=10) for h in hs] == [i + 1 for i in range(len(hs))]


def test_native_callbacks_run_before_a_backlog_ends(native_lib) -> None:  # type: ignore[no-untyped-def]
    """A callback waits on no idle moment: a busy worker takes the GIL for it.

    Nobody else would run it: this thread holds the GIL in a pure-Python loop (the
    interpreter still hands it over every switch interval, 5 ms) and submits nothing.
    The backlog behind the task (20,000 tasks of 10 us, ~0.2 s) is still running when
    its callback fires.
    """
    gate = ctypes.c_int32(0)
    spin = native_lib.address("spin_ns")
    fired: list[bool] = []
    with Engine(workers=1) as eng:
        eng.submit_native(spin, (0,), b"i", b"i").result(timeout=10)
        g = eng.submit_native(
            native_lib.address("wait_gate"), (ctypes.addressof(gate),), b"i", b"i"
        )
        first = eng.submit_native(spin, (10_000,), b"i", b"i")
        first.add_done_callback(lambda h: fired.append(True))
        backlog = [eng.submit_native(spin, (10_000,), b"i", b"i") for _ in range(20_000)]
        gate.value = 1
        deadline = time.monotonic() + 30
        while not fired and time.monotonic() < deadline:
            pass
        backlog_done_then = backlog[-1].done()
        assert fired
        assert not backlog_done_then, "the callback waited for the whole backlog"
        for h in [g, *backlog]:
            h.result(timeout=30)


def test_an_event_loop_awaits_thousands_of_native_tasks(native_lib) -> None:  # type: ignore[no-untyped-def]
    """The loop's thread submits and awaits: their callbacks run wherever their
    bookkeeping is done (the loop's own submissions included), each one wakes it."""
    add = native_lib.address("add_i64")

    async def main() -> list[int]:
        with Engine(workers=2) as eng:
            hs = [eng.submit_native(add, (i, 1), b"ii", b"i") for i in range(5_000)]
            return await asyncio.wait_for(asyncio.gather(*hs), 30)

    assert asyncio.run(main()) == [i + 1 for i in range(5_000)]


_FORK_WITH_CALLS_PUBLISHED = """
import ctypes, os, sys
from cytask import Engine

lib = ctypes.CDLL(sys.argv[1])
add, gate_fn = (ctypes.cast(f, ctypes.c_void_p).value for f in (lib.add_i64, lib.wait_gate))
gate = ctypes.c_int32(0)
eng = Engine(workers=1)
eng.submit(int).result(timeout=10)   # the worker is up, with nothing to finish
sys.setswitchinterval(60.0)   # keep the GIL: the worker publishes, nobody takes
g = eng.submit_native(gate_fn, (ctypes.addressof(gate),), b"i", b"i")
hs = [eng.submit_native(add, (i, 1), b"ii", b"i") for i in range(1000)]
gate.value = 1
while not hs[-1].done():
    pass
pid = os.fork()
if pid == 0:
    sys.setswitchinterval(0.005)
    ok = [h.result(timeout=10) for h in hs] == [i + 1 for i in range(1000)]
    ok = ok and eng.submit_native(add, (2, 3), b"ii", b"i").result(timeout=10) == 5
    eng.shutdown(wait=True)
    os._exit(0 if ok else 3)
sys.setswitchinterval(0.005)
child = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
assert [h.result(timeout=10) for h in hs] == [i + 1 for i in range(1000)]
eng.shutdown(wait=True)
print("child", child)
"""


def test_fork_while_finished_calls_wait_for_the_gil(native_lib) -> None:  # type: ignore[no-untyped-def]
    """Fork while a worker's finished calls sit on the shared stack (and the worker
    waits for the GIL): the child keeps their results and runs new native tasks."""
    assert native_lib.run(_FORK_WITH_CALLS_PUBLISHED) == ["child", "0"]


class _Fallback:
    def __call__(self, a: int, b: int) -> int:
        return a + b


def test_every_native_handle_is_finished_once_under_load(native_lib) -> None:  # type: ignore[no-untyped-def]
    """Two producers, four workers, 40,000 tiny natives, a callback on every third.

    Whoever finishes a call's bookkeeping (a producer, a worker in a Python section, an
    idle worker), each callback runs exactly once and every handle lets go of its
    fallback: the sentinel's reference count comes back to where it started.
    """
    add = native_lib.address("add_i64")
    fallback = _Fallback()
    before = sys.getrefcount(fallback)
    calls: list[int] = []
    registered = [0, 0]
    start = threading.Barrier(2)
    handles: list[list[Any]] = [[], []]
    with Engine(workers=4) as eng:

        def produce(k: int) -> None:
            start.wait(timeout=10)
            for i in range(20_000):
                h = eng.submit_native(add, (i, k), b"ii", b"i", fallback=fallback)
                if i % 3 == 0:
                    h.add_done_callback(lambda h, i=i: calls.append(i))
                    registered[k] += 1
                handles[k].append(h)

        threads = [threading.Thread(target=produce, args=(k,)) for k in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        for k in (0, 1):
            assert [h.result(timeout=30) for h in handles[k]] == [i + k for i in range(20_000)]
    assert len(calls) == sum(registered)
    assert sorted(calls) == sorted(i for i in range(20_000) if i % 3 == 0 for _ in (0, 1))
    handles.clear()
    gc.collect()
    assert sys.getrefcount(fallback) == before


@pytest.mark.parametrize(
    ("args", "kinds", "result_kind", "exc", "match"),
    [
        ((1, 2), b"i", b"i", ValueError, "Expected 2 arg_kinds"),
        (("x",), b"i", b"i", TypeError, "Expected int for argument 0, got str"),
        ((1,), b"d", b"x", ValueError, "result_kind"),
        (tuple(range(9)), b"i" * 9, b"i", ValueError, "at most 8 arguments"),
    ],
)
def test_native_submit_validates(engine, native_lib, args, kinds, result_kind, exc, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exc, match=match):
        engine.submit_native(native_lib.address("add_i64"), args, kinds, result_kind)


def test_rejected_native_submit_leaves_no_task_behind(engine: Engine, native_lib) -> None:  # type: ignore[no-untyped-def]
    before = engine.stats().submitted_tasks
    with pytest.raises(OverflowError):
        engine.submit_native(native_lib.address("add_i64"), (2**70, 1), b"ii", b"i")
    with pytest.raises(TypeError):
        engine.submit_native(native_lib.address("add_i64"), (1, "x"), b"ii", b"i")
    assert engine.stats().submitted_tasks == before  # no handle stuck pending in the store
