"""Idle workers park and are woken: no lost wake-ups, no idle spinning."""

from __future__ import annotations

import random
import threading
import time

from cytask import Engine, TaskStatus


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


def test_the_worker_that_parked_last_is_woken_first() -> None:
    # LIFO wake-ups: a lone task after an idle gap goes to the worker with warm caches
    # (the one that ran the previous task), not to the longest sleeper, so wake latency
    # does not grow with the pool.  Old behaviour (one shared futex word): FIFO, so
    # sequential tasks rotated through all eight workers.
    with Engine(workers=8) as eng:
        runners: list[int] = []
        for _ in range(40):
            deadline = time.monotonic() + 10
            while eng._idle_workers() < 8 and time.monotonic() < deadline:
                time.sleep(0.0005)
            assert eng._idle_workers() == 8
            eng.submit(lambda: runners.append(threading.get_ident())).result(timeout=30)
        assert len(set(runners[1:])) == 1


def test_many_workers_many_producers_with_idle_gaps_lose_no_wake_up(rng) -> None:  # type: ignore[no-untyped-def]
    # more workers than cores, producers that pause so workers park and wake all the
    # time: a lost wake-up leaves a task queued and its result() times out
    with Engine(workers=16) as eng:
        seeds = [rng.random() for _ in range(4)]
        errors: list[BaseException] = []

        def produce(seed: float) -> None:
            r = random.Random(seed)
            try:
                for i in range(1500):
                    h = eng.submit(int, i)
                    if r.random() < 0.2:
                        time.sleep(r.uniform(0, 0.0005))
                    if r.random() < 0.1:
                        assert h.result(timeout=30) == i
            except BaseException as exc:  # reported below, in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=produce, args=(s,)) for s in seeds]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        last = eng.submit(int, -1)
        assert last.result(timeout=30) == -1
    assert eng.stats().total_tasks_processed == 4 * 1500 + 1


def _wait_until(what, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.0005)


def test_linger_naps_take_tasks_without_a_wake_then_park() -> None:
    # Engine(linger=...): a worker that just took a task naps instead of parking, so
    # a producer queues without waking it (no sleeper to wake), and it takes the task
    # when the nap ends; after an empty nap it parks as usual (no CPU while idle).
    with Engine(workers=1, linger=0.05) as eng:
        for _ in range(20):
            assert eng.submit(int, 1).result(timeout=10) == 1
            _wait_until(lambda: eng._napping_workers() == 1)
            assert eng._idle_workers() == 0  # napping is not parked: nobody to wake
            assert eng.submit(int, 2).result(timeout=10) == 2  # taken at the nap's end
        _wait_until(lambda: eng._idle_workers() == 1)
        assert eng._napping_workers() == 0


def test_linger_streams_from_many_producers_lose_nothing() -> None:
    # Nappers are not woken by producers: a stream from several threads, with the
    # workers going between naps, parks and work, must still run every task once.
    with Engine(workers=2, linger=0.0002) as eng:
        n_threads, per_thread = 4, 5_000
        barrier = threading.Barrier(n_threads)
        handles: list[list[object]] = [[] for _ in range(n_threads)]

        def produce(k: int) -> None:
            barrier.wait()
            rng = random.Random(k)
            for i in range(per_thread):
                handles[k].append(eng.submit(int, i))
                if rng.random() < 0.01:
                    time.sleep(rng.random() * 0.001)  # gaps around the linger

        threads = [threading.Thread(target=produce, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for hs in handles:
            assert [h.result(timeout=30) for h in hs] == list(range(per_thread))  # type: ignore[attr-defined]


def test_shutdown_with_a_napping_worker_drains_at_once() -> None:
    eng = Engine(workers=1, linger=0.05)
    eng.submit(int).result(timeout=10)
    _wait_until(lambda: eng._napping_workers() == 1)
    late = eng.submit(int, 7)
    eng.shutdown(wait=True, timeout=10)  # the napper sees the stop when its nap ends
    assert late.result(timeout=0) == 7
    assert eng._napping_workers() == 0 and eng._live() == 0


def test_shutdown_wakes_a_napping_worker() -> None:
    # Nobody woke a napper, shutdown() included: a task queued during the nap was
    # cancelled by a shutdown(timeout) shorter than the nap, the worker idle, and an
    # idle engine's shutdown() waited the nap out.  Each is tried a few times (the
    # machine may be loaded): once is enough, as the old code could never do it.
    def queued_task_runs() -> bool:
        eng = Engine(workers=1, linger=0.1)
        eng.submit(int).result(timeout=10)
        _wait_until(lambda: eng._napping_workers() == 1)
        late = eng.submit(int, 7)
        eng.shutdown(wait=True, timeout=0.05)  # half the nap
        ran = late.status == TaskStatus.SUCCEEDED
        eng.shutdown(wait=True)
        return ran

    def idle_shutdown_is_quick() -> bool:
        eng = Engine(workers=1, linger=0.1)
        eng.submit(int).result(timeout=10)
        _wait_until(lambda: eng._napping_workers() == 1)
        began = time.monotonic()
        eng.shutdown(wait=True)
        return time.monotonic() - began < 0.05 and eng._live() == 0

    assert any(queued_task_runs() for _ in range(5))
    assert any(idle_shutdown_is_quick() for _ in range(5))


def test_tasks_queued_for_a_napper_do_not_wake_the_auto_scaler() -> None:
    # A napping worker is idle: work queued for it is no reason to wake the auto-scaler
    # (every push found no parked worker and woke it, to tick every 0.5 ms meanwhile)
    with Engine(workers=1, max_workers=4, linger=0.05) as eng:
        for _ in range(10):
            eng.submit(int).result(timeout=10)
            _wait_until(lambda: eng._napping_workers() == 1 and eng._grower_asleep())
            hs = [eng.submit(int, i) for i in range(5)]  # queued during the nap
            assert eng._grower_asleep() or eng._napping_workers() == 0
            assert [h.result(timeout=10) for h in hs] == list(range(5))
        assert eng._live() == 1
