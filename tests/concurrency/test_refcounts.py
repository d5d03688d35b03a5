"""No reference leaks on the hot path; the debug build's counters balance."""

from __future__ import annotations

import gc
import sys
import tracemalloc

import pytest

from cytask import Engine, _core


class Sentinel:
    pass


def test_sentinel_refcount_unchanged_after_100k_tasks() -> None:
    sentinel = Sentinel()
    before = sys.getrefcount(sentinel)
    eng = Engine(workers=2, max_results=16)
    for _ in range(100_000):
        eng.submit(id, sentinel)
    for _ in range(1_000):
        eng.submit(lambda s: None, s=sentinel)
    eng.shutdown(wait=True)
    gc.collect()
    assert sys.getrefcount(sentinel) == before


def test_failed_and_cancelled_tasks_release_arguments() -> None:
    sentinel = Sentinel()
    before = sys.getrefcount(sentinel)
    eng = Engine(workers=1, max_results=16)

    def boom(_: object) -> None:
        raise ValueError

    handles = [eng.submit(boom, sentinel) for _ in range(1000)]
    handles += [eng.submit(id, sentinel) for _ in range(1000)]
    eng.shutdown(wait=False, cancel_pending=True)
    eng.shutdown(wait=True)
    del handles
    gc.collect()
    assert sys.getrefcount(sentinel) == before


def test_memory_does_not_grow_across_bursts() -> None:
    eng = Engine(workers=2, max_results=1000)
    tracemalloc.start()
    try:
        for _ in range(3):  # warm up freelists and the result store
            [eng.submit(int, i) for i in range(20_000)][-1].result(timeout=30)
        gc.collect()
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(10):
            [eng.submit(int, i) for i in range(20_000)][-1].result(timeout=30)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        eng.shutdown()
    assert after - base < 1_000_000


@pytest.mark.skipif(not _core.DEBUG_BUILD, reason="counters exist in CYTASK_DEBUG=1 builds")
def test_debug_counters_balance() -> None:
    gc.collect()
    pushed0, popped0, live0 = _core.debug_counters()
    eng = Engine(workers=2, max_results=0)
    handles = [eng.submit(int, i) for i in range(10_000)]
    eng.shutdown(wait=True)
    pushed, popped, _live = _core.debug_counters()
    assert pushed - pushed0 == popped - popped0 == 10_000
    del handles
    gc.collect()
    assert _core.debug_counters()[2] == live0


def test_engine_is_collected_after_shutdown() -> None:
    import weakref

    eng = Engine(workers=2)
    handles = [eng.submit(int, i) for i in range(1000)]
    eng.shutdown(wait=True)
    ref = weakref.ref(eng)
    del eng
    gc.collect()
    assert ref() is None, "a finished handle must not keep its engine alive"
    assert handles[-1].result(timeout=0) == 999


def test_cycle_through_a_result_is_collected() -> None:
    import weakref

    from cytask import current_task

    marker = Sentinel()
    ref = weakref.ref(marker)
    with Engine(workers=1) as eng:
        h = eng.submit(lambda m: [current_task(), m], marker)  # result -> handle -> result
        assert h.result(timeout=10)[0] is h
    del h, marker, eng  # the engine's result store holds the handle too
    gc.collect()
    assert ref() is None, "handles whose result may cycle back must be GC-tracked"
