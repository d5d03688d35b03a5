"""Quick start: run a long operation in the background and collect its result.

Port of the Catzilla guide's "Basic Background Task": instead of a POST endpoint
that answers with the task id, the script submits the task, prints what the
endpoint would have returned, then waits for the result.

    python examples/quick_start.py
"""

from __future__ import annotations

import time

from cytask import Engine


def long_running_task(steps: int = 10) -> dict[str, str]:
    """Simulate a long-running operation (10 steps of 20 ms instead of 1 s)."""
    for i in range(steps):
        time.sleep(0.02)  # simulate work
        print(f"Task progress: {i + 1}/{steps}", flush=True)
    return {"result": "Task completed successfully"}


def main() -> None:
    with Engine(workers=4) as eng:
        handle = eng.add_task(long_running_task)
        # What the endpoint answered at once, before the task finished:
        print({"message": "Task started", "task_id": handle.task_id, "status": str(handle.status)})

        result = handle.result(timeout=10)
        print(f"task {handle.task_id} {handle.status}: {result}")
    print("engine shut down")


if __name__ == "__main__":
    main()
