"""``fork()``: the child gets a working engine at once; the parent is untouched.

In the child, what the parent had queued, running, delayed or retrying is cancelled
(the parent runs it), periodic schedules stay with the parent, and fresh workers take
new tasks.  Every scenario runs in a subprocess with a hard timeout: the old failure
was a child that hung (in ``result()``, or in ``sys.exit()``'s drain).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork()")


def _run(body: str, timeout: float = 60) -> list[str]:
    # 3.12+ warns about fork() in a multi-threaded process: that is the point here
    proc = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", textwrap.dedent(body)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr
    return proc.stdout.splitlines()


def test_os_fork_child_gets_fresh_workers_and_the_parent_is_untouched() -> None:
    lines = _run(
        """
        import os, sys, threading, time
        import cytask

        eng = cytask.Engine(workers=2)
        gate = threading.Event()
        running = [eng.submit(gate.wait) for _ in range(2)]      # both workers busy
        while not all(h.running() for h in running):
            time.sleep(0.001)
        queued = [eng.submit(pow, i, 2) for i in range(5)]
        delayed = eng.add_task(pow, 3, 2, delay=0.3)
        ticks = []
        periodic = eng.every(0.05, ticks.append, 1)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                                             # the child
            out = []
            s = eng.stats()
            out.append(f"workers {s.total_workers} active {s.active_workers} "
                       f"queued {s.total_queued} scheduled {s.scheduled_tasks}")
            out.append(" ".join(h.status.value for h in running + queued + [delayed]))
            try:
                queued[0].result(timeout=5)
            except cytask.CancelledError as exc:
                out.append("fork()" in str(exc))
            out.append(eng.submit(pow, 7, 2).result(timeout=10))  # new work runs
            out.append(periodic.cancelled)
            os.write(w, repr(out).encode())
            sys.exit(0)                    # the exit drain must not hang on ghost workers
        os.close(w)
        _, status = os.waitpid(pid, 0)
        with os.fdopen(r) as f:
            print(f.read())
        print("child exit", os.waitstatus_to_exitcode(status))
        gate.set()                                               # the parent's own tasks
        print([h.result(timeout=10) for h in queued], delayed.result(timeout=10))
        print(eng.stats().total_workers, not periodic.cancelled)
        eng.shutdown()
        """
    )
    child = eval(lines[0])  # our own repr
    assert child[0] == "workers 2 active 0 queued 0 scheduled 0"
    assert child[1] == " ".join(["cancelled"] * 8)
    assert child[2:] == [True, 49, True]
    assert lines[1] == "child exit 0"
    assert lines[2] == "[0, 1, 4, 9, 16] 9"
    assert lines[3] == "2 True"


def test_multiprocessing_fork_child_uses_the_preloaded_default_engine() -> None:
    # gunicorn --preload style: the default engine exists before the fork
    lines = _run(
        """
        import multiprocessing as mp
        import cytask

        @cytask.task
        def add(x, y):
            return x + y

        def child(q):
            h = add.delay(20, 22)
            q.put(h.result(timeout=10))
            add.delay(1, 1)            # left queued: drained when the child exits

        if __name__ == "__main__":
            print(add.delay(1, 2).result(timeout=10))          # the default exists now
            ctx = mp.get_context("fork")
            q = ctx.Queue()
            p = ctx.Process(target=child, args=(q,))
            p.start()
            print(q.get(timeout=30))
            p.join(30)
            print("exitcode", p.exitcode)
            print(add.delay(2, 3).result(timeout=10))          # the parent still works
        """
    )
    assert lines == ["3", "42", "exitcode 0", "5"]


def test_sys_exit_in_a_fork_child_drains_its_own_tasks() -> None:
    lines = _run(
        """
        import os, sys, time
        import cytask

        @cytask.task
        def note(fd, text):
            time.sleep(0.05)
            os.write(fd, text.encode())

        note.delay(1, "").result(timeout=10)                   # the default exists
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            for i in range(3):
                note.delay(w, f"child task {i}\\n")
            sys.exit(0)                                        # drains, then exits
        os.close(w)
        _, status = os.waitpid(pid, 0)
        with os.fdopen(r) as f:
            print(" ".join(sorted(f.read().split("\\n"))).strip())
        print("child exit", os.waitstatus_to_exitcode(status))
        """,
        timeout=30,
    )
    assert lines == ["child task 0 child task 1 child task 2", "child exit 0"]


def test_a_closed_engine_stays_closed_in_the_child() -> None:
    lines = _run(
        """
        import os, sys
        import cytask

        eng = cytask.Engine(workers=1)
        eng.shutdown()
        pid = os.fork()
        if pid == 0:
            try:
                eng.submit(int)
            except cytask.EngineClosed:
                os._exit(7 if eng.stats().total_workers == 0 else 1)
            os._exit(1)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        """
    )
    assert lines == ["7"]


def test_the_childs_threads_can_log_at_once() -> None:
    # an engine's fork hook starts threads in the child (a store's feeder logs through
    # redis-py); they ran before logging's own hook gave its lock a fresh state, so one
    # that asked for a logger then waited forever.  A resource reset runs inside that
    # hook: a thread it starts must get a logger.
    lines = _run(
        """
        import os, threading
        import cytask
        from cytask import _lifecycle

        got = []

        def reset_in_child():
            t = threading.Thread(target=lambda: got.append(logging.getLogger("child")))
            t.start()
            t.join(5)

        import logging
        _lifecycle.register_fork_hooks(
            before=lambda: None, after_in_parent=lambda: None, after_in_child=reset_in_child
        )
        eng = cytask.Engine(workers=1)
        pid = os.fork()
        if pid == 0:
            os._exit(0 if got else 1)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        eng.shutdown()
        """
    )
    assert lines == ["child 0"]
