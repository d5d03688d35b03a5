"""An engine nobody refers to is collected, as a ``ThreadPoolExecutor`` is.

Its queued tasks still run, then its threads leave and its memory is freed.  Workers
use the engine's queues without holding a reference (pyx/core/workers.pyx,
``_worker_loop``), so a mistake here is a use-after-free: each scenario runs in a
subprocess with a hard timeout, and the debug build (CI) checks the core's counters.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

PRELUDE = """
import gc, os, sys, threading, time, weakref
import cytask

def threads():
    return len(os.listdir("/proc/self/task"))

def wait_for(predicate, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        gc.collect()
        time.sleep(0.005)

BASE = threads()
"""


def _run(body: str, timeout: float = 120) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def test_a_dropped_engine_runs_its_queue_then_is_collected_and_its_threads_leave() -> None:
    out = _run(
        """
        gate = threading.Event()
        eng = cytask.Engine(workers=4)
        handles = [eng.submit(gate.wait, 30) for _ in range(4)]
        handles += [eng.submit(pow, i, 2) for i in range(200)]
        ref = weakref.ref(eng)
        assert threads() > BASE
        del eng
        gc.collect()
        assert ref() is not None, "its queued tasks hold it"
        gate.set()
        assert [h.result(timeout=20) for h in handles[4:]] == [i * i for i in range(200)]
        handles = None
        wait_for(lambda: ref() is None, "the engine to be collected")
        wait_for(lambda: threads() == BASE, "its threads to leave")
        print("ok")
        """
    )
    assert out == "ok\n"


def test_many_dropped_engines_leave_no_threads_behind() -> None:
    # idle ones, ones with queued work, the timer running (result_ttl), native tasks,
    # an engine in a reference cycle (eager/copy_context keep a bound method), the last
    # reference dropped on a worker thread (the task held it), an auto-scaling engine
    # (its supervisor thread), and one that ran async tasks (its event loop thread)
    out = _run(
        """
        import asyncio
        from cytask.compiler import compile_task

        def add(a: int, b: int) -> int:
            return a + b

        async def nap(x):
            await asyncio.sleep(0.001)
            return x

        entry = compile_task(add).native
        refs = []
        for i in range(140):
            kind = i % 7
            if kind == 0:
                eng = cytask.Engine(workers=3)
            elif kind == 1:
                eng = cytask.Engine(workers=2)
                for j in range(50):
                    eng.submit(abs, -j)
            elif kind == 2:
                eng = cytask.Engine(workers=2, copy_context=True)
                eng.submit(abs, -1).result(timeout=10)
            elif kind == 3:
                eng = cytask.Engine(workers=2)
                if entry is not None:
                    h = eng.submit_native(entry.address, (1, 2), entry.arg_kinds,
                                          entry.result_kind)
                    assert h.result(timeout=10) == 3
                    h = None
            elif kind == 4:
                eng = cytask.Engine(workers=2)
                box = [eng]
                eng.submit(box.clear)  # the worker drops the last reference
            elif kind == 5:
                eng = cytask.Engine(workers=1, max_workers=4)
                for j in range(8):
                    eng.submit(time.sleep, 0.002)
            else:
                eng = cytask.Engine(workers=1)
                assert [h.result(timeout=10) for h in [eng.submit(nap, j) for j in range(3)]] \\
                    == [0, 1, 2]
            refs.append(weakref.ref(eng))
            eng = None
        wait_for(lambda: all(r() is None for r in refs), "every engine to be collected")
        wait_for(lambda: threads() == BASE, "every thread to leave")
        print("ok")
        """
    )
    assert out == "ok\n"


def test_a_stuck_worker_keeps_its_dropped_engine_until_its_task_returns() -> None:
    # a worker abandoned after a time limit is not waited for by shutdown: it must
    # keep the engine's memory until it leaves
    out = _run(
        """
        started, release = threading.Event(), threading.Event()

        def stuck():
            started.set()
            release.wait(30)

        eng = cytask.Engine(workers=1)
        t = cytask.task(timeout=0.05, engine=eng)(stuck)
        h = t.delay()
        assert started.wait(10)
        try:
            h.result(timeout=10)
        except cytask.TaskTimeout:
            pass
        ref = weakref.ref(eng)
        eng = t = h = None
        wait_for(lambda: ref() is None or ref().stats().stuck_workers == 1,
                 "the stuck worker to be counted")
        release.set()
        wait_for(lambda: ref() is None, "the engine to be collected")
        wait_for(lambda: threads() == BASE, "every thread to leave")
        print("ok")
        """
    )
    assert out == "ok\n"


def test_a_dropped_engine_still_drains_at_exit() -> None:
    # dropped with a long queue, then the interpreter exits at once: every task runs
    out = _run(
        """
        done = []
        eng = cytask.Engine(workers=1)
        for i in range(300):
            eng.submit(lambda i=i: (time.sleep(0.0005), done.append(i)))
        eng = None
        gc.collect()
        import atexit
        atexit.register(lambda: print(len(done)))
        """
    )
    assert out == "300\n"


def test_an_engine_whose_shutdown_timed_out_is_kept_until_its_busy_worker_leaves() -> None:
    # shutdown(timeout) returns while a task still runs on a worker (not abandoned:
    # no time limit); the engine, then dropped and collected, must outlive that worker
    out = _run(
        """
        started, release = threading.Event(), threading.Event()

        def busy():
            started.set()
            release.wait(30)

        eng = cytask.Engine(workers=1)
        eng.submit(busy)
        assert started.wait(10)
        eng.shutdown(wait=True, timeout=0.01)
        ref = weakref.ref(eng)
        eng = None
        gc.collect()
        release.set()
        wait_for(lambda: ref() is None, "the engine to be collected")
        wait_for(lambda: threads() == BASE, "every thread to leave")
        print("ok")
        """
    )
    assert out == "ok\n"


def test_a_subclass_whose_del_skips_the_engines_is_still_safe() -> None:
    # its __del__ replaces the one that keeps the engine for its workers: the core's
    # deallocation then stops them and waits for them itself
    out = _run(
        """
        class MyEngine(cytask.Engine):
            def __del__(self):
                pass

        for i in range(20):
            eng = MyEngine(workers=2)
            eng.submit(pow, 2, 8).result(timeout=10)
            eng = None
            gc.collect()
        wait_for(lambda: threads() == BASE, "every thread to leave")
        print("ok")
        """
    )
    assert out == "ok\n"


def test_engines_dropped_mid_flight_by_many_threads_end_every_task() -> None:
    # engines dropped while a stand-in worker is lent (a task waits on its own
    # engine's handle), while time limits replace stuck workers of an auto-scaling
    # engine, while the timer hands due tasks to a full level, from a done-callback,
    # from eight threads at once, while another thread reads stats() and the tasks
    # call current_task()/current_worker_core() through weak references: every
    # handle ends, every engine is collected, every thread leaves
    out = _run(
        """
        from cytask._core import current_worker_core

        lock = threading.Lock()
        refs, handles = [], []
        start = threading.Barrier(8)

        def who():  # the engine's own references may all be gone meanwhile
            gc.collect()
            me = cytask.current_task()
            assert me is not None and current_worker_core().name.startswith("cytask-")
            return me.task_id

        def one(i):
            kind = i % 5
            gate = threading.Event()
            hs = []
            if kind == 0:  # a lent worker: its task waits for another task of its engine
                eng = cytask.Engine(workers=1)
                inner = eng.submit(gate.wait, 10)
                hs += [inner, eng.submit(lambda: inner.result(timeout=10))]
            elif kind == 1:  # time-limit replacements while the pool grows
                eng = cytask.Engine(workers=1, max_workers=4)
                slow = cytask.task(timeout=0.005, engine=eng)(time.sleep)
                hs += [slow.delay(0.02) for _ in range(3)] + [eng.submit(who) for _ in range(5)]
            elif kind == 2:  # due tasks handed off to a full level
                eng = cytask.Engine(workers=1, queue_size=2)
                hs.append(eng.submit(gate.wait, 10))
                hs += [eng.add_task(abs, -j, delay=0.001) for j in range(12)]
            elif kind == 3:  # the last reference dropped by a done-callback
                eng = cytask.Engine(workers=2)
                box = [eng]
                hs.append(eng.submit(time.sleep, 0.001))
                hs[-1].add_done_callback(lambda h, box=box: box.clear())
                hs += [eng.submit(who) for _ in range(5)]
            else:  # retries and delays pending
                eng = cytask.Engine(workers=2)
                flaky = cytask.task(retries=3, retry_backoff=0.001, engine=eng)(int)
                hs += [flaky.delay("x") for _ in range(3)]
                hs += [eng.add_task(abs, -1, delay=0.005) for _ in range(3)]
            with lock:
                refs.append(weakref.ref(eng))
                handles.extend(hs)
            eng = None
            gate.set()

        stop = threading.Event()

        def poll():
            while not stop.is_set():
                for r in list(refs):
                    e = r()
                    if e is not None:
                        e.stats()
                    e = None

        def run(t):
            start.wait()
            for i in range(t, 120, 8):
                one(i)

        poller = threading.Thread(target=poll)
        poller.start()
        ts = [threading.Thread(target=run, args=(t,)) for t in range(8)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        for h in handles:
            try:
                h.result(timeout=20)
            except (cytask.TaskTimeout, ValueError):
                pass
        assert all(h.done() for h in handles)
        handles = h = None
        stop.set()  # (its strong references would keep an engine in a cycle alive)
        poller.join()
        wait_for(lambda: all(r() is None for r in refs), "every engine to be collected", 60)
        wait_for(lambda: threads() == BASE, "every thread to leave", 60)
        print("ok")
        """
    )
    assert out == "ok\n"


def test_a_dropped_store_engine_leaves_no_thread_behind(tmp_path: object) -> None:
    # a producer (workers=0) with a store, dropped with or without shutdown(): its
    # store's background checkpointer must not keep the store, and itself, for good
    out = _run(
        f"""
        for i in range(6):
            eng = cytask.Engine(workers=0, store="sqlite:///{tmp_path}/tasks.db")
            h = eng.submit(abs, -1)
            if i % 2:
                eng.shutdown()
            ref = weakref.ref(eng._durable.store)
            eng = h = None
            wait_for(lambda: ref() is None, "the store to be collected")
        wait_for(lambda: threads() == BASE, "every thread to leave")
        print("ok")
        """
    )
    assert out == "ok\n"


def test_dropping_an_auto_scaling_engine_does_not_wait_for_its_scaler_to_wake() -> None:
    # the last reference goes (or shutdown(wait=False) is called) just as the
    # auto-scaler decides to park: its stop must not be missed, which left the
    # dropping thread waiting out the scaler's whole park (1 s)
    out = _run(
        """
        sys.setswitchinterval(1e-6)  # GIL switches everywhere: the race, often
        worst = 0.0
        for i in range(300):
            eng = cytask.Engine(workers=1, max_workers=4)
            for j in range(i % 5):
                eng.submit(abs, -j)
            t = time.perf_counter()
            if i % 2:
                eng.shutdown(wait=False)
            eng = None
            worst = max(worst, time.perf_counter() - t)
        assert worst < 0.5, worst
        wait_for(lambda: threads() == BASE, "every thread to leave")
        print("ok")
        """
    )
    assert out == "ok\n"
