"""Native tasks under attack: where their bookkeeping runs, reentrance, fork, exit."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

from cytask import Engine

_CALLBACK_IN_A_PRODUCER = """
import ctypes, sys, threading, time
from cytask import Engine

lib = ctypes.CDLL(sys.argv[1])
add, spin, gate_fn = (ctypes.cast(f, ctypes.c_void_p).value
                      for f in (lib.add_i64, lib.spin_ns, lib.wait_gate))
gate = ctypes.c_int32(0)
lock = threading.Lock()
ran_on = []
fired = threading.Event()

def callback(h):
    with lock:   # the producer below holds it while it submits
        ran_on.append(threading.get_ident())
    fired.set()

eng = Engine(workers=1)
eng.submit(int).result(timeout=10)   # the worker is up, with nothing to finish
sys.setswitchinterval(60.0)   # keep the GIL: the worker publishes, nobody takes
g = eng.submit_native(gate_fn, (ctypes.addressof(gate),), b"i", b"i")
h = eng.submit_native(add, (1, 2), b"ii", b"i")
h.add_done_callback(callback)
backlog = [eng.submit_native(spin, (10_000,), b"i", b"i") for _ in range(2000)]
gate.value = 1
while not h.done():
    pass
end = time.monotonic() + 0.1   # 100 of the worker's publishing periods (1 ms)
while time.monotonic() < end:
    pass
with lock:   # a producer that holds its own lock while it submits
    eng.submit_native(add, (3, 4), b"ii", b"i")
sys.setswitchinterval(0.005)
assert fired.wait(10)
assert h.result(timeout=10) == 3
eng.shutdown(wait=True)
print("main" if ran_on == [threading.get_ident()] else "other")
"""


def test_a_producer_never_runs_another_tasks_callback(native_lib) -> None:  # type: ignore[no-untyped-def]
    """A done-callback runs on the worker that finished the task, never inside some
    producer's submit(): a producer that holds a lock the callback takes while it
    submits would wait for itself forever (before: the submit ran the callback)."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", _CALLBACK_IN_A_PRODUCER, str(native_lib.path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("submit() ran a callback that waits for the producer's lock") from exc
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["other"]


def test_callbacks_that_submit_never_nest(native_lib) -> None:  # type: ignore[no-untyped-def]
    """2,000 chains of 20 natives, each callback submitting the next: no callback
    starts inside another one on the same thread.  Before, a callback's submit() ran
    the callbacks of calls that had finished meanwhile, which submitted in turn: the
    stack grew with the load (300+ frames), towards RecursionError."""
    add = native_lib.address("add_i64")
    local = threading.local()
    nested: list[int] = []
    left = [2_000]
    finished = threading.Event()
    lock = threading.Lock()
    with Engine(workers=4) as eng:

        def step(h: Any, k: int) -> None:
            if getattr(local, "inside", False):
                nested.append(k)
            local.inside = True
            try:
                assert h.result(timeout=0) == k + 1
                if k == 0:
                    with lock:
                        left[0] -= 1
                        if left[0] == 0:
                            finished.set()
                    return
                nxt = eng.submit_native(add, (k - 1, 1), b"ii", b"i")
                nxt.add_done_callback(lambda h, k=k - 1: step(h, k))
            finally:
                local.inside = False

        for _ in range(2_000):
            first = eng.submit_native(add, (20, 1), b"ii", b"i")
            first.add_done_callback(lambda h: step(h, 20))
        assert finished.wait(60)
    assert nested == []
