"""Task analytics: throughput, latency percentiles, errors, workers and memory.

Port of the Catzilla guide's "Task Analytics" (``/task-analytics`` and
``/task-performance``).  A mixed workload runs (fast, slow and failing tasks)
and the script prints both reports from ``eng.stats()``.  Every figure is
measured; none is a constant.  Two of the guide's fields have no counterpart:
``memory_efficiency`` and the per-worker CPU figures (``worker_cpu_usage``,
``worker_memory_usage``, ``engine_cpu_usage``); workers are threads of this
process, so the process figures (``memory_usage_mb``) are the honest ones.

    python examples/analytics.py
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from cytask import Engine, EngineStats


def fast(i: int) -> int:
    return i * i


def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def failing(i: int) -> None:
    raise RuntimeError(f"bad input {i}")


def task_analytics(stats: EngineStats) -> dict[str, Any]:
    """What GET /task-analytics returned."""
    return {
        "total_tasks_executed": stats.total_tasks_processed,
        "performance_metrics": {
            "tasks_per_second": round(stats.tasks_per_second, 1),
            "average_execution_time_ms": round(stats.avg_execution_time_ms, 3),
            "p95_execution_time_ms": round(stats.p95_execution_time_ms, 3),
        },
        "queue_status": {
            "total_queued": stats.total_queued,
            "queue_pressure": stats.queue_pressure,
        },
        "worker_status": {
            "active_workers": stats.active_workers,
            "total_workers": stats.total_workers,
            "worker_utilization": round(stats.avg_worker_utilization, 3),
        },
        "memory_usage": {"current_mb": round(stats.memory_usage_mb, 1)},
        "error_metrics": {
            "failed_tasks": stats.failed_tasks,
            "error_rate": round(stats.error_rate, 3),
        },
        "uptime_seconds": round(stats.uptime_seconds, 2),
    }


def task_performance(stats: EngineStats) -> dict[str, Any]:
    """What GET /task-performance returned."""
    return {
        "performance_summary": {
            "throughput": f"{stats.tasks_per_second:.2f} tasks/sec",
            "avg_response_time": f"{stats.avg_execution_time_ms:.2f}ms",
            "worker_utilization": f"{stats.avg_worker_utilization * 100:.1f}%",
        },
        "detailed_metrics": {
            "execution_times": {
                "average_ms": round(stats.avg_execution_time_ms, 3),
                "p95_ms": round(stats.p95_execution_time_ms, 3),
                "p99_ms": round(stats.p99_execution_time_ms, 3),
            },
            "resource_usage": {"memory_mb": round(stats.memory_usage_mb, 1)},
        },
        "timestamp": datetime.now().isoformat(),
    }


def main() -> None:
    with Engine(workers=4) as eng:
        eng.stats()  # first sample of the sliding throughput window
        handles = [eng.add_task(fast, i) for i in range(900)]
        handles += [eng.add_task(slow, 0.02) for _ in range(40)]
        handles += [eng.add_task(failing, i) for i in range(60)]
        for h in handles:
            h.wait(timeout=10)
        stats = eng.stats()

        print("task analytics:")
        print(json.dumps(task_analytics(stats), indent=2))
        print("task performance:")
        print(json.dumps(task_performance(stats), indent=2))

        assert stats.total_tasks_processed == 1000
        assert stats.failed_tasks == 60
        print(
            f"summary: {stats.total_tasks_processed} tasks, {stats.failed_tasks} failed "
            f"(error rate {stats.error_rate:.0%}), p99 {stats.p99_execution_time_ms:.1f} ms"
        )
        print(f"all {len(stats.as_dict())} fields: {sorted(stats.as_dict())}")
    print("engine shut down")


if __name__ == "__main__":
    main()
