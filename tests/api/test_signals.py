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


# -- every blocking wait in the main thread reacts to signals (Ctrl-C) ---------------

INTERRUPT_SCRIPT = """
import os, signal, sys, threading, time
import cytask

what, how = sys.argv[1], sys.argv[2]
eng = cytask.Engine(workers=1, queue_size=2)
gate = threading.Event()
main = threading.main_thread().ident
sent = []

held = eng.submit(gate.wait)              # never ends until the gate opens
if what == "submit":
    while held.status is not cytask.TaskStatus.RUNNING:
        time.sleep(0.001)
    eng.submit(int)
    eng.submit(int)                       # the NORMAL level (2 slots) is full now

def block_here():
    if what == "result":
        held.result()
    elif what == "result_timeout":
        held.result(timeout=60)
    elif what == "wait":
        held.wait()
    elif what == "exception":
        held.exception()
    elif what == "shutdown":
        eng.shutdown(wait=True)
    elif what == "submit":
        eng.submit(int)                   # blocks: the level stays full

def inside_block_here():
    frame = sys._current_frames().get(main)
    while frame is not None and frame.f_code is not block_here.__code__:
        frame = frame.f_back
    return frame is not None

def shooter():
    # signal once the main thread is inside block_here (and so inside the wait)
    while not inside_block_here():
        time.sleep(0.001)
    time.sleep(0.05)
    sent.append(time.monotonic())
    if how == "process":
        os.kill(os.getpid(), signal.SIGINT)   # the kernel picks the thread (the main one)
    else:
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # lands on this thread

threading.Thread(target=shooter, daemon=True).start()
try:
    block_here()
except KeyboardInterrupt:
    print(f"interrupted {time.monotonic() - sent[0]:.4f}", flush=True)
else:
    print("not interrupted", flush=True)
gate.set()
if what == "submit":
    blocked = eng.get(4)
    try:
        blocked.result(timeout=0)
    except BaseException as exc:
        print("blocked submit", blocked.status.value, type(exc).__name__, flush=True)
eng.shutdown(wait=True)
print("clean exit", flush=True)
"""


@pytest.mark.parametrize("how", ["process", "other_thread"])
@pytest.mark.parametrize(
    "what", ["result", "result_timeout", "wait", "exception", "shutdown", "submit"]
)
def test_ctrl_c_interrupts_a_blocking_wait_promptly(what: str, how: str) -> None:
    # the task never ends on its own: before the fix every one of these waits hung
    proc = subprocess.run(
        [sys.executable, "-c", INTERRUPT_SCRIPT, what, how],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stderr
    assert lines[0].startswith("interrupted "), (lines, proc.stderr)
    latency = float(lines[0].split()[1])
    assert latency < 0.5, f"KeyboardInterrupt took {latency:.3f} s"  # ~1 ms here; slice 50 ms
    if what == "submit":
        # the task that never got into the queue ends cancelled, not pending forever
        assert lines[1] == "blocked submit cancelled CancelledError", lines
    assert lines[-1] == "clean exit"


# -- the handler never blocks on the engine's locks ----------------------------------

LOCK_HELD_SCRIPT = """
import os, signal, sys, time
import cytask
from cytask import _timer

eng = cytask.Engine(workers=1)
eng.install_signal_handlers(timeout=1, signals=(signal.{sig},))
original = _timer.Timer.call_at
fired = []

def call_at(self, *args):
    # runs inside Engine._timer_call_at, with Engine._lock held (as in add_task(delay=))
    if not fired:
        fired.append(1)
        os.kill(os.getpid(), signal.{sig})
        for _ in range(1000):   # bytecodes: the Python-level handler runs in here
            pass
    return original(self, *args)

_timer.Timer.call_at = call_at
try:  # the exit (after the drain) may land anywhere from here on
    eng.add_task(print, "never", delay=30)
    while True:
        time.sleep(1)
finally:
    print("delayed task", eng.get(1).status.value, "closed", eng.closed, flush=True)
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_while_the_main_thread_holds_the_engine_lock(sig: str) -> None:
    # before: the handler called shutdown(), which took the lock the interrupted frame
    # held, and the process never exited
    proc = subprocess.run(
        [sys.executable, "-c", LOCK_HELD_SCRIPT.format(sig=sig)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.stdout.splitlines() == ["delayed task cancelled closed True"], proc.stderr
    if sig == "SIGTERM":
        assert proc.returncode == 143, proc.stderr
    else:
        assert "KeyboardInterrupt" in proc.stderr and proc.returncode != 0


def test_signal_while_the_main_thread_waits_to_submit_drains_without_waiting_for_it() -> None:
    # the main thread is blocked in submit() on a full level when SIGTERM arrives: the
    # handler drains what is queued and exits; the task that never got into the queue
    # ends cancelled (the drain does not wait out its 30 s deadline for it)
    code = textwrap.dedent(
        """
        import os, signal, sys, threading, time
        import cytask

        eng = cytask.Engine(workers=1, queue_size=2)
        eng.install_signal_handlers(timeout=30)
        gate = threading.Event()
        held = eng.submit(gate.wait, 0.5)
        while not held.running():
            time.sleep(0.001)
        queued = [eng.submit(int, i) for i in range(2)]

        def kill_when_blocked():
            # task 4 exists once the main thread is inside submit(), waiting for space
            while eng._core_stats()["submitted"] < 4:
                time.sleep(0.001)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=kill_when_blocked, daemon=True).start()
        t0 = time.monotonic()
        try:
            eng.submit(int, 99)           # blocks until SIGTERM
        finally:
            print([h.status.value for h in queued], eng.get(4).status.value, flush=True)
            print(time.monotonic() - t0 < 10, flush=True)  # not the 30 s deadline
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 143, proc.stderr
    assert proc.stdout.splitlines() == ["['succeeded', 'succeeded'] cancelled", "True"]
