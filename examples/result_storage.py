"""Task result storage: look a finished task's result up later, by id.

Port of the Catzilla guide's "Persistent Results".  The guide kept results in
its own dict; cytask's engine keeps them in a bounded store: ``eng.get(task_id)``
finds a recent task's handle (with its status and result) for ``result_ttl``
seconds, and only the last ``max_results`` tasks, so memory stays bounded.  A
handle the caller holds keeps its own result regardless.  The store is in
memory: for results that must survive a restart, write them to a database
from the task.

    python examples/result_storage.py
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from cytask import Engine


def complex_calculation(n: int) -> dict[str, Any]:
    """Sum of squares (up to 200,000 instead of 1,000,000)."""
    result = 0
    for i in range(n):
        result += i**2
    return {
        "calculation": "sum_of_squares",
        "range": f"0 to {n - 1:,}",
        "result": result,
        "computed_at": datetime.now().isoformat(),
    }


def get_calculation_result(eng: Engine, task_id: int) -> dict[str, Any]:
    """What GET /calculation-result/{task_id} returned."""
    h = eng.get(task_id)
    if h is None or not h.done():
        return {"error": "Result not found or not yet available"}
    return {
        "task_id": task_id,
        "result": h.result(timeout=0),
        "retrieved_at": datetime.now().isoformat(),
    }


def main() -> None:
    # keep results 0.5 s and at most 5 of them (defaults: 3600 s and 100,000)
    with Engine(workers=2, result_ttl=0.5, max_results=5) as eng:
        task_id = eng.add_task(complex_calculation, 200_000).task_id  # keep only the id
        print({"message": "Calculation started", "task_id": task_id})
        print(f"right away: {get_calculation_result(eng, task_id)}")

        while (h := eng.get(task_id)) is not None and not h.done():
            time.sleep(0.005)
        answer = get_calculation_result(eng, task_id)
        print(f"when done:  {answer}")
        assert answer["result"]["result"] == sum(i * i for i in range(200_000))

        time.sleep(0.6)
        print(f"after result_ttl: {get_calculation_result(eng, task_id)}")

        held = eng.add_task(complex_calculation, 1_000)
        others = [eng.add_task(pow, 2, i) for i in range(10)]
        for h in [held, *others]:
            h.result(timeout=10)
        print(f"after 10 more tasks (max_results=5): eng.get -> {eng.get(held.task_id)}")
        print(f"the held handle keeps its result: {held.result()['result']}")
    print("engine shut down")


if __name__ == "__main__":
    main()
