"""``install_signal_handlers()``: SIGTERM/SIGINT drain the engine with a deadline, then exit."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from cytask import Engine

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SCRIPT = """
import signal, sys, threading, time
import cytask

eng = cytask.Engine(workers=2)
eng.install_signal_handlers(timeout={timeout})
started = threading.Event()

def work(i):
    started.set()
    time.sleep({work_s})
    sys.stdout.write(f"done {{i}}\\n")  # one write: print() pieces interleave
    sys.stdout.flush()

for i in range({n}):
    eng.submit(work, i)
started.wait()
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def _start(timeout: float = 30, work_s: float = 0.02, n: int = 20) -> subprocess.Popen[str]:
    code = SCRIPT.format(timeout=timeout, work_s=work_s, n=n)
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return proc


def _wait_ready(proc: subprocess.Popen[str]) -> list[str]:
    assert proc.stdout is not None
    before = []
    for line in proc.stdout:
        line = line.rstrip("\n")
        if line == "ready":
            return before
        before.append(line)
    pytest.fail(f"child exited early: {proc.wait()} {proc.stderr.read() if proc.stderr else ''}")


def test_sigterm_drains_queued_tasks_then_exits_143() -> None:
    proc = _start()
    seen = _wait_ready(proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    lines = seen + out.splitlines()
    assert proc.returncode == 143, err
    assert sorted(lines) == sorted(f"done {i}" for i in range(20))  # nothing dropped


def test_sigint_drains_then_raises_keyboard_interrupt() -> None:
    proc = _start()
    seen = _wait_ready(proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    lines = seen + out.splitlines()
    assert sorted(lines) == sorted(f"done {i}" for i in range(20))
    assert "KeyboardInterrupt" in err
    assert proc.returncode != 0


def test_drain_has_a_deadline() -> None:
    # two workers, tasks of 5 s each, a 0.5 s deadline: the process exits long before
    # the queue could have been drained, and the tasks still queued are cancelled
    proc = _start(timeout=0.5, work_s=5, n=50)
    _wait_ready(proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)  # draining everything would take 125 s
    assert proc.returncode == 143, err
    assert out.count("done") < 50


def test_previous_handler_runs_after_the_drain() -> None:
    code = textwrap.dedent(
        """
        import signal, sys, time
        import cytask

        def previous(signum, frame):
            print("previous handler", signum, flush=True)
            sys.exit(7)

        signal.signal(signal.SIGTERM, previous)
        eng = cytask.Engine(workers=1)
        eng.install_signal_handlers(timeout=30, signals=(signal.SIGTERM,))
        h = eng.submit(time.sleep, 0.05)
        h.add_done_callback(lambda _: print("task done", flush=True))
        print("ready", flush=True)
        while True:
            time.sleep(1)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_ready(proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 7, err
    lines = out.splitlines()
    assert lines[-1] == f"previous handler {int(signal.SIGTERM)}"
    assert "task done" in lines


def test_install_from_a_worker_thread_is_refused(engine: Engine) -> None:
    errors: list[BaseException] = []

    def install() -> None:
        try:
            engine.install_signal_handlers()
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=install)
    t.start()
    t.join(30)
    assert len(errors) == 1 and "main thread" in str(errors[0])


def test_engine_is_closed_after_the_signal() -> None:
    code = textwrap.dedent(
        """
        import os, signal
        import cytask

        eng = cytask.Engine(workers=1)
        eng.install_signal_handlers(timeout=5)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except SystemExit as exc:
            print("exit", exc.code, "closed", eng.closed, flush=True)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.stdout.strip() == "exit 143 closed True", proc.stderr
