"""Task queues and priorities: urgent work jumps the queue.

Port of the Catzilla guide's "Task Queues and Priorities" (the ``/priority-task``
endpoint; ``/batch-processing`` is in ``batch_processing.py``).  A worker always
takes the oldest task of the highest non-empty level: CRITICAL, HIGH, NORMAL,
LOW.  To make the order visible, one worker is kept busy while tasks of every
priority are queued, in the worst order (lowest first).

    python examples/priorities.py
"""

from __future__ import annotations

import threading
import time

from cytask import Engine, Priority, TaskPriority

order: list[str] = []
gate = threading.Event()


def hold_worker() -> None:
    gate.wait(5)


def high_priority_task() -> dict[str, str]:
    """Critical system maintenance (50 ms instead of 5 s)."""
    print("🔧 Performing critical system maintenance...", flush=True)
    time.sleep(0.05)
    order.append("maintenance")
    return {"maintenance": "completed", "systems": "healthy"}


def job(name: str) -> str:
    order.append(name)
    return name


def main() -> None:
    with Engine(workers=1) as eng:
        eng.add_task(hold_worker)  # the only worker is busy until gate is set
        while eng.stats().active_workers < 1:
            time.sleep(0.001)

        handles = [eng.add_task(job, f"low-{i}", priority=Priority.LOW) for i in range(2)]
        handles += [eng.add_task(job, f"normal-{i}", priority=Priority.NORMAL) for i in range(2)]
        # TaskPriority is Catzilla's name for the same enum
        maintenance = eng.add_task(high_priority_task, priority=TaskPriority.HIGH)
        print(
            {
                "message": "High priority task scheduled",
                "task_id": maintenance.task_id,
                "priority": maintenance.priority.name,
            }
        )
        handles.append(maintenance)
        handles.append(eng.add_task(job, "critical-alert", priority=Priority.CRITICAL))
        s = eng.stats()
        print(
            f"queued: critical={s.critical_queue_size} high={s.high_queue_size} "
            f"normal={s.normal_queue_size} low={s.low_queue_size}"
        )

        gate.set()
        for h in handles:
            h.result(timeout=10)
        print(f"maintenance result: {maintenance.result()}")
        print(f"execution order: {' > '.join(order)}")
    print("engine shut down")


if __name__ == "__main__":
    main()
