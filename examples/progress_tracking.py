"""Progress tracking: a task reports its step and percentage; the caller polls.

Port of the Catzilla guide's "Progress Tracking".  The guide kept a hand-made
``task_storage`` dict; in cytask the task calls
``current_task().set_progress(pct, message)`` and anyone holding the handle (or
looking it up with ``eng.get(task_id)``, as the GET endpoint did) sees it at once.

    python examples/progress_tracking.py
"""

from __future__ import annotations

import time
from typing import Any

from cytask import Engine, current_task

STEPS = [
    "Loading data...",
    "Validating records...",
    "Processing batch 1/3...",
    "Processing batch 2/3...",
    "Processing batch 3/3...",
    "Generating report...",
    "Saving results...",
]


def data_processing_task() -> dict[str, Any]:
    """Process data with progress updates (30 ms per step instead of 1 s)."""
    me = current_task()
    t0 = time.perf_counter()
    for i, step in enumerate(STEPS):
        progress = (i + 1) * 100 // len(STEPS)
        me.set_progress(progress, step)
        print(f"📊 Task {me.task_id}: {step} ({progress}%)", flush=True)
        time.sleep(0.03)  # simulate processing time
    return {
        "processed_records": 1000,
        "generated_file": "report_2024.pdf",
        "processing_time": f"{time.perf_counter() - t0:.2f} seconds",
    }


def get_task_progress(eng: Engine, task_id: int) -> dict[str, Any]:
    """What the GET /task-progress/{task_id} endpoint returned."""
    h = eng.get(task_id)
    if h is None:
        return {"error": "Task not found"}
    return {
        "task_id": task_id,
        "progress_percent": h.progress,
        "current_step": h.progress_message or "Unknown",
        "status": str(h.status),
        "result": h.result(timeout=0) if h.status == "succeeded" else None,
    }


def main() -> None:
    with Engine(workers=4) as eng:
        handle = eng.add_task(data_processing_task)
        print({"message": "Data processing started", "task_id": handle.task_id})

        seen = set()
        while not handle.done():
            info = get_task_progress(eng, handle.task_id)
            if info["current_step"] not in seen:
                seen.add(info["current_step"])
                print(f"  poll: {info['progress_percent']:.0f}% {info['current_step']}")
            time.sleep(0.005)
        print(f"final: {get_task_progress(eng, handle.task_id)}")
        print(f"unknown id: {get_task_progress(eng, 10**9)}")
    print("engine shut down")


if __name__ == "__main__":
    main()
