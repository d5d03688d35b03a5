"""Real-time task updates: list the running tasks and read the engine's statistics.

Port of the Catzilla guide's "Real-Time Task Updates" (the ``/active-tasks`` and
``/task-stats`` endpoints).  Every figure comes from ``eng.stats()``, computed
for real while a workload is in flight: queue depths per priority, busy and idle
workers, throughput, execution time and memory.

    python examples/realtime_stats.py
"""

from __future__ import annotations

import threading
import time
from typing import Any

from cytask import Engine, Priority, TaskHandle, current_task

release = threading.Event()


def work(seconds: float) -> float:
    current_task().set_progress(50, "waiting for the release signal")
    release.wait(5)  # hold the worker so the snapshot below is deterministic
    time.sleep(seconds)
    return seconds


def list_active_tasks(handles: list[TaskHandle[Any]]) -> dict[str, Any]:
    """What GET /active-tasks returned."""
    active = [
        {"task_id": h.task_id, "status": str(h.status), "progress": h.progress}
        for h in handles
        if h.running()
    ]
    return {"active_tasks": active, "total_count": len(active)}


def get_task_stats(eng: Engine) -> dict[str, Any]:
    """What GET /task-stats returned."""
    stats = eng.stats()
    return {
        "queue_metrics": {
            "critical_queue_size": stats.critical_queue_size,
            "high_queue_size": stats.high_queue_size,
            "normal_queue_size": stats.normal_queue_size,
            "low_queue_size": stats.low_queue_size,
            "total_queued": stats.total_queued,
        },
        "worker_metrics": {
            "active_workers": stats.active_workers,
            "idle_workers": stats.idle_workers,
            "total_workers": stats.total_workers,
        },
        "performance_metrics": {
            "tasks_per_second": round(stats.tasks_per_second, 1),
            "avg_execution_time_ms": round(stats.avg_execution_time_ms, 2),
            "memory_usage_mb": round(stats.memory_usage_mb, 1),
        },
    }


def main() -> None:
    with Engine(workers=4) as eng:
        get_task_stats(eng)  # first sample of the throughput window
        handles = [
            eng.add_task(work, 0.01, priority=prio)
            for prio in (Priority.HIGH, Priority.NORMAL, Priority.LOW)
            for _ in range(8)
        ]
        # four tasks are running, twenty wait in three queues
        deadline = time.monotonic() + 5
        while sum(h.running() for h in handles) < 4 and time.monotonic() < deadline:
            time.sleep(0.001)
        active = list_active_tasks(handles)
        print(f"active tasks: {active['total_count']}")
        for t in active["active_tasks"]:
            print(f"  {t}")
        during = get_task_stats(eng)
        print(f"stats while busy: {during}")
        assert during["worker_metrics"]["active_workers"] == 4
        assert during["queue_metrics"]["total_queued"] == 20

        release.set()
        for h in handles:
            h.result(timeout=10)
        after = get_task_stats(eng)
        print(f"stats when idle:  {after}")
        print(f"active tasks after the run: {list_active_tasks(handles)['total_count']}")
    print("engine shut down")


if __name__ == "__main__":
    main()
