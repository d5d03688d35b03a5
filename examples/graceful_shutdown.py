"""Graceful shutdown: SIGTERM drains the queued work, then the process exits.

Port of the Catzilla guide's "Graceful Shutdown", whose handler slept a fixed 5 s
and hoped the tasks were done.  ``eng.install_signal_handlers(timeout=...)``
turns SIGTERM/SIGINT into ``eng.shutdown(wait=True, timeout=...)``: no new work
is accepted, everything already queued runs to completion (up to the deadline),
then the signal's usual effect follows.  For SIGTERM with no previous handler
that is ``SystemExit(143)`` (128 + SIGTERM), the status a process manager
expects from a process stopped by SIGTERM.

Here the script sends SIGTERM to itself once 20 tasks are queued behind two
busy workers.  It catches the SystemExit only to print what was drained, then
re-raises it: **this script exits with status 143 on purpose** (the smoke test
expects that code).

    python examples/graceful_shutdown.py; echo "exit status $?"
"""

from __future__ import annotations

import os
import signal
import time

from cytask import Engine, EngineClosed


def save_record(i: int) -> int:
    time.sleep(0.01)  # a write that must not be lost
    return i


def main() -> None:
    eng = Engine(workers=2)
    eng.install_signal_handlers(timeout=10.0)
    handles = [eng.add_task(save_record, i) for i in range(20)]
    queued = eng.stats().total_queued
    print(f"submitted {len(handles)} tasks, {queued} still queued")
    try:
        print("🛑 sending SIGTERM to ourselves...", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # not reached: the handler drains the engine, then raises SystemExit
        print("error: SIGTERM did not stop the script")
    except SystemExit as exc:
        done = sum(h.status == "succeeded" for h in handles)
        print(f"⏳ drained: {done}/{len(handles)} tasks succeeded before exit")
        try:
            eng.add_task(save_record, -1)
        except EngineClosed:
            print("new work is refused after shutdown")
        print(f"✅ Graceful shutdown completed, exiting with status {exc.code}")
        raise


if __name__ == "__main__":
    main()
