"""Recurring tasks: a health check every 50 ms, and a cron schedule.

Port of the Catzilla guide's "Recurring Tasks", whose example could only run the
check once ("schedule multiple instances or use external schedulers").  cytask
schedules it itself: ``Engine.every(interval, fn)`` and ``Engine.cron(expr, fn)``
return a ``Periodic`` you can cancel.

    python examples/recurring_tasks.py
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import psutil

from cytask import Engine


def check_system_health() -> dict[str, Any]:
    """Monitor system health (real figures, from psutil)."""
    cpu_percent = psutil.cpu_percent(interval=None)
    memory_percent = psutil.virtual_memory().percent
    print(f"🖥️  System Health - CPU: {cpu_percent}%, Memory: {memory_percent}%", flush=True)
    return {
        "cpu_percent": cpu_percent,
        "memory_percent": memory_percent,
        "timestamp": datetime.now().isoformat(),
    }


def main() -> None:
    with Engine(workers=2) as eng:
        monitor = eng.every(0.05, check_system_health)  # first run after one interval
        print({"message": "System monitoring started", "interval": "every 0.05 s"})

        # A cron schedule fires at matching minutes; this one would run every 5
        # minutes.  We only show it is accepted and stop it at once.
        report = eng.cron("*/5 * * * *", print, "5-minute report")
        print(f"cron schedule registered: {report!r}")
        report.cancel()

        time.sleep(0.28)
        monitor.cancel()
        runs = monitor.runs
        last = monitor.last_handle
        assert last is not None
        print(f"last check: {last.result(timeout=5)}")
        time.sleep(0.12)  # no further runs after cancel()
        print(f"monitoring stopped after {runs} runs (still {monitor.runs} after cancel)")
    print("engine shut down")


if __name__ == "__main__":
    main()
