"""Shutdown paths that used to lose or strand work.

Producers blocked in ``submit()`` on a full level when shutdown begins, and
``shutdown()`` called from inside a task or a done-callback.  Each scenario runs in a
subprocess with a hard timeout: the old failure was a hang.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PRELUDE = """
import sys, threading, time
import cytask
from cytask import TaskStatus

def blocked_producers(eng, n, fn=int):
    '''Start n threads, each blocked in submit() on a full level; returns their results.'''
    results = [None] * n
    def produce(i):
        results[i] = eng.submit(fn, i)
    before = eng._core_stats()["submitted"]
    threads = [threading.Thread(target=produce, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    # a producer's handle exists (and is in the store) only once it is inside submit()
    # past the failed push, registered as waiting for space
    deadline = time.monotonic() + 20
    while eng._core_stats()["submitted"] < before + n:
        assert time.monotonic() < deadline, "producers did not block"
        time.sleep(0.001)
    return threads, results
"""


def _run(body: str, timeout: float = 30) -> list[str]:
    code = PRELUDE + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr
    return proc.stdout.splitlines()


# -- item 7: producers blocked in submit() on a full level -----------------------------


def test_drain_runs_the_tasks_of_producers_blocked_on_a_full_level() -> None:
    lines = _run(
        """
        eng = cytask.Engine(workers=1, queue_size=2)
        gate = threading.Event()
        held = eng.submit(gate.wait)
        while held.status is not TaskStatus.RUNNING:
            time.sleep(0.001)
        queued = [eng.submit(int, i) for i in range(2)]       # the level is full
        threads, results = blocked_producers(eng, 8)
        gate.set()
        eng.shutdown(wait=True)                               # drains: nothing cancelled
        for t in threads:
            t.join(10)
        print(sorted(h.result(timeout=0) for h in results))
        print(sorted(h.status.value for h in queued + results) == ["succeeded"] * 10)
        """
    )
    assert lines == [str(list(range(8))), "True"]


def test_drain_without_wait_still_runs_blocked_producers_tasks() -> None:
    lines = _run(
        """
        eng = cytask.Engine(workers=1, queue_size=2)
        gate = threading.Event()
        held = eng.submit(gate.wait)
        while held.status is not TaskStatus.RUNNING:
            time.sleep(0.001)
        [eng.submit(int, i) for i in range(2)]
        threads, results = blocked_producers(eng, 4)
        eng.shutdown(wait=False)
        gate.set()
        for t in threads:
            t.join(10)
        print([h.result(timeout=10) for h in results])
        """
    )
    assert lines == ["[0, 1, 2, 3]"]


@pytest.mark.parametrize("wait", [True, False])
def test_cancel_pending_wakes_blocked_producers_and_cancels_their_tasks(wait: bool) -> None:
    lines = _run(
        f"""
        eng = cytask.Engine(workers=1, queue_size=2)
        gate = threading.Event()
        held = eng.submit(gate.wait)
        while held.status is not TaskStatus.RUNNING:
            time.sleep(0.001)
        queued = [eng.submit(int, i) for i in range(2)]
        threads, results = blocked_producers(eng, 4)
        if {wait}:
            threading.Timer(0.2, gate.set).start()            # let the held task end
        eng.shutdown(wait={wait}, cancel_pending=True)
        for t in threads:
            t.join(10)                                        # woken: none blocks forever
        print(sum(t.is_alive() for t in threads), "producers still blocked")
        print(sorted(h.status.value for h in queued + results))
        try:
            results[0].result(timeout=0)
        except cytask.CancelledError as exc:
            print("cancel_pending" in str(exc))
        gate.set()
        eng.shutdown(wait=True)
        s = eng.stats()
        print(s.cancelled_tasks, s.total_tasks_processed)
        """
    )
    assert lines[0] == "0 producers still blocked"
    assert lines[1] == str(["cancelled"] * 6)
    assert lines[2] == "True"
    assert lines[3] == "6 1"


def test_shutdown_timeout_wakes_blocked_producers() -> None:
    lines = _run(
        """
        eng = cytask.Engine(workers=1, queue_size=2)
        gate = threading.Event()
        held = eng.submit(gate.wait)                          # stuck past the deadline
        while held.status is not TaskStatus.RUNNING:
            time.sleep(0.001)
        [eng.submit(int, i) for i in range(2)]
        threads, results = blocked_producers(eng, 3)
        eng.shutdown(wait=True, timeout=0.2)
        for t in threads:
            t.join(10)
        print(sum(t.is_alive() for t in threads), [h.status.value for h in results])
        gate.set()
        """
    )
    assert lines == ["0 ['cancelled', 'cancelled', 'cancelled']"]


# -- item 12: shutdown() from inside a task or a done-callback drains ------------------


@pytest.mark.parametrize("where", ["task", "done_callback"])
@pytest.mark.parametrize("workers", [1, 2])
def test_shutdown_called_on_a_worker_drains_the_queue(where: str, workers: int) -> None:
    lines = _run(
        f"""
        eng = cytask.Engine(workers={workers})
        gate = threading.Event()
        ran = []

        def first():
            gate.wait()
            if "{where}" == "task":
                eng.shutdown()                       # wait=True, no timeout: a drain
                return "shut down"
            return "first"

        h = eng.submit(first)
        if "{where}" == "done_callback":
            h.add_done_callback(lambda _: eng.shutdown())
        queued = [eng.submit(ran.append, i) for i in range(200)]
        gate.set()
        print(h.result(timeout=20))
        for q in queued:
            q.wait(timeout=20)
        print(sorted(q.status.value for q in queued) == ["succeeded"] * 200, len(ran))
        eng.shutdown()
        print(eng.stats().total_workers)
        """
    )
    assert lines == ["shut down" if where == "task" else "first", "True 200", "0"]


@pytest.mark.parametrize("cancel_pending", [False, True])
def test_shutdown_racing_producers_on_a_tiny_queue_loses_nothing(cancel_pending: bool) -> None:
    # producers fill a 2-slot level while shutdown begins at a random moment: every
    # task submit() accepted ends terminal; a drain runs every one of them
    lines = _run(
        f"""
        import random
        seed = random.randrange(2**32)
        rng = random.Random(seed)
        bad = []
        for round in range(40):
            eng = cytask.Engine(workers=2, queue_size=2)
            accepted = []
            start = threading.Barrier(5)

            def produce():
                start.wait()
                for i in range(300):
                    try:
                        accepted.append(eng.submit(int, i))
                    except cytask.EngineClosed:
                        return

            threads = [threading.Thread(target=produce) for _ in range(4)]
            for t in threads:
                t.start()
            start.wait()
            time.sleep(rng.random() * 0.003)
            eng.shutdown(wait=True, cancel_pending={cancel_pending})
            for t in threads:
                t.join(20)
                assert not t.is_alive(), "a producer stayed blocked"
            statuses = {{h.status.value for h in accepted}}
            allowed = {{"succeeded", "cancelled"}} if {cancel_pending} else {{"succeeded"}}
            if not statuses <= allowed or eng.stats().total_workers != 0:
                bad.append((round, statuses))
        print("seed", seed, "bad", bad)
        """,
        timeout=120,
    )
    assert lines[0].endswith("bad []"), lines
