"""Idle workers park and are woken: no lost wake-ups, no idle spinning."""

from __future__ import annotations

import threading
import time

from cytask import Engine


def test_ten_thousand_single_submissions_to_idle_engine_all_complete() -> None:
    # Each submit finds the workers parked (or about to park): a lost wake-up
    # would hang here, and the suite's timeout turns that into a failure.
    with Engine(workers=2) as eng:
        for i in range(10_000):
            assert eng.submit(int, i).result(timeout=30) == i


def test_wake_while_other_thread_submits(rng) -> None:  # type: ignore[no-untyped-def]
    with Engine(workers=2) as eng:
        stop = threading.Event()
        seen: list[int] = []

        def trickle() -> None:
            while not stop.is_set():
                eng.submit(seen.append, 1).result(timeout=30)

        t = threading.Thread(target=trickle)
        t.start()
        try:
            for i in range(5_000):
                assert eng.submit(int, i).result(timeout=30) == i
        finally:
            stop.set()
            t.join()


def test_idle_engine_uses_almost_no_cpu() -> None:
    with Engine(workers=2) as eng:
        eng.submit(int).result(timeout=10)

        # wait until both workers have parked: the sleeper count says so
        deadline = time.monotonic() + 10
        while eng._idle_workers() < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert eng._idle_workers() == 2
        t0, c0 = time.monotonic(), time.process_time()
        time.sleep(0.3)  # the idle window being measured: nothing is queued
        t1, c1 = time.monotonic(), time.process_time()
        assert (c1 - c0) / (t1 - t0) < 0.05, "idle workers must park, not spin"
