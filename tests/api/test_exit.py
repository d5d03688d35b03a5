"""Interpreter exit: every engine drains, like ``ThreadPoolExecutor`` does.

Each scenario is a script run in a subprocess with a hard timeout; the script ends
without waiting for its tasks, and the test counts what ran.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

PRELUDE = """
import sys, threading, time
import cytask

def say(text):
    sys.stdout.write(f"{text}\\n")  # one write: print() pieces interleave
    sys.stdout.flush()
"""


def _run(body: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_an_engine_never_shut_down_drains_at_exit() -> None:
    proc = _run(
        """
        eng = cytask.Engine(workers=2)
        for i in range(30):
            eng.submit(lambda i=i: (time.sleep(0.01), say(f"done {i}")))
        say("submitted")
        """
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "submitted"
    assert sorted(lines[1:]) == sorted(f"done {i}" for i in range(30))
    assert proc.stderr == ""


def test_shutdown_without_wait_still_drains_at_exit() -> None:
    proc = _run(
        """
        eng = cytask.Engine(workers=1)
        for i in range(20):
            eng.submit(lambda i=i: (time.sleep(0.01), say(f"done {i}")))
        eng.shutdown(wait=False)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"done {i}" for i in range(20)]


def test_a_replaced_default_engine_still_drains_at_exit() -> None:
    proc = _run(
        """
        @cytask.task
        def work(i):
            time.sleep(0.2)
            say(f"done {i}")

        for i in range(6):
            work.delay(i)                                   # on the lazily made default
        cytask.set_default_engine(cytask.Engine(workers=1))
        say("replaced")                                     # the new default has no work
        """
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "replaced"
    assert sorted(lines[1:]) == [f"done {i}" for i in range(6)]


def test_a_task_queued_by_a_task_during_the_exit_drain_runs() -> None:
    # the default engine is closed while it drains at exit: a bare @task queued from a
    # task then lands on a new default engine, which must be drained too
    proc = _run(
        """
        @cytask.task
        def child(i):
            time.sleep(0.2)
            say(f"child {i}")

        @cytask.task
        def parent(i):
            time.sleep(0.05)
            child.delay(i)
            say(f"parent {i}")

        for i in range(5):
            parent.delay(i)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    expected = [f"parent {i}" for i in range(5)] + [f"child {i}" for i in range(5)]
    assert sorted(proc.stdout.splitlines()) == sorted(expected)


def test_an_engine_shut_down_with_a_timeout_is_not_waited_for_again() -> None:
    # a stuck task: the bounded shutdown returned, so exit must not wait for it
    proc = _run(
        """
        eng = cytask.Engine(workers=1)
        stuck = threading.Event()
        eng.submit(stuck.wait)
        queued = eng.submit(say, "never")
        eng.shutdown(wait=True, timeout=0.1)
        say(queued.status.value)
        """,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["cancelled"]


def test_ctrl_c_ends_an_exit_drain_stuck_on_a_task() -> None:
    # like ThreadPoolExecutor the exit drain waits for running tasks; Ctrl-C ends it
    code = PRELUDE + textwrap.dedent(
        """
        eng = cytask.Engine(workers=1)
        eng.submit(threading.Event().wait)     # never ends
        say("ready")
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    deadline = time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < deadline:
        proc.send_signal(signal.SIGINT)  # the first may land before the drain began
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.2)
    if proc.poll() is None:
        proc.kill()
        proc.communicate()
        pytest.fail("the exit drain did not react to SIGINT")
    proc.communicate()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="3.12 refuses threads in atexit")
def test_no_new_thread_errors_at_exit_on_312() -> None:
    proc = _run(
        """
        @cytask.task
        def child(i):
            say(f"child {i}")

        @cytask.task
        def parent(i):
            child.delay(i)

        for i in range(3):
            parent.delay(i)
        """
    )
    assert "can't create new thread" not in proc.stderr
    assert sorted(proc.stdout.splitlines()) == [f"child {i}" for i in range(3)]


def test_ctrl_c_during_the_exit_drain_cancels_the_queue() -> None:
    """A user who presses Ctrl-C while the exit drain waits wants out: what is queued is
    cancelled (every handle still ends), later engines hurry too, and no traceback
    escapes into threading's shutdown (before, the KeyboardInterrupt ended the exit
    hooks there: "Exception ignored", queued handles never ended, later engines skipped)."""
    proc = _run(
        """
        import atexit, os, signal

        exiting = threading.Event()
        # threading's exit hooks run last-registered first: this one just before the drains
        threading._register_atexit(exiting.set)

        def ctrl_c_once_exiting():
            exiting.wait(30)
            time.sleep(0.1)  # inside the drain's wait by now (a later signal: same path)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)

        first, second = cytask.Engine(workers=1), cytask.Engine(workers=1)
        hs = [first.submit(ctrl_c_once_exiting)]
        hs += [first.submit(time.sleep, 1) for _ in range(20)]
        hs += [second.submit(time.sleep, 1) for _ in range(20)]

        def report():  # a plain atexit hook: it runs after threading's exit hooks
            states = [h.status.value for h in hs]
            say(f"{states.count('cancelled')} cancelled, {states.count('pending')} pending")

        atexit.register(report)
        """,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    cancelled, pending = map(int, re.findall(r"\d+", proc.stdout))
    # the first engine's queue and the second engine's (its worker runs one at most)
    assert cancelled >= 38 and pending == 0, proc.stdout
