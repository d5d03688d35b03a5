"""Task error recovery: retry a flaky operation with exponential back-off.

Port of the Catzilla guide's "Task Error Recovery".  There a failure was final;
here ``@task(retries=3, retry_backoff=...)`` runs the task again after a failure,
the handle reports "retrying" in between and counts ``attempts``, and when every
attempt fails the handle raises the last error.  The random failures are seeded
by job and attempt, so every run fails the same way.

    python examples/retries.py
"""

from __future__ import annotations

import random
import time
from typing import Any

from cytask import Engine, Priority, current_task, task

eng = Engine(workers=4)


@task(engine=eng, priority=Priority.HIGH, retries=3, retry_backoff=0.02)
def unreliable_operation(label: str) -> dict[str, Any]:
    """Simulate an operation that might fail (a 20 ms call instead of 2 s)."""
    attempt = current_task().attempt
    if random.Random(f"{label}/{attempt}").random() < 0.3:  # 30% chance of failure
        print(f"  {label}: attempt {attempt} failed", flush=True)
        raise ConnectionError("Simulated network error")
    time.sleep(0.02)
    print(f"  {label}: attempt {attempt} succeeded", flush=True)
    return {"status": "success", "data": f"{label} completed"}


@task(engine=eng, retries=2, retry_backoff=0.05)
def always_down() -> None:
    raise ConnectionError(f"service unreachable (attempt {current_task().attempt})")


def main() -> None:
    try:
        handles = [unreliable_operation.delay(f"job-{i}") for i in range(10)]
        for h in handles:
            h.result(timeout=10)
        for h in handles:
            print(f"task {h.task_id}: {h.status} after {h.attempts} attempt(s)")
        retried = sum(h.attempts > 1 for h in handles)
        print(f"{retried} of {len(handles)} tasks needed a retry; all succeeded")

        doomed = always_down.delay()
        while doomed.status not in ("retrying", "failed"):
            time.sleep(0.001)
        print(f"while backing off: status={doomed.status}")
        err = doomed.exception(timeout=10)
        print(f"gave up after {doomed.attempts} attempts: {type(err).__name__}: {err}")
        print(f"engine counted {eng.stats().retried_tasks} retries")
    finally:
        eng.shutdown(wait=True)
    print("engine shut down")


if __name__ == "__main__":
    main()
