"""Native tasks: C function pointers run by the workers with no GIL."""

from __future__ import annotations

import itertools
import threading
import time

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
