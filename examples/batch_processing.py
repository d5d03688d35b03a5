"""Batch processing: submit many related tasks, then collect them as they finish.

Port of the Catzilla guide's ``/batch-processing`` endpoint (from "Task Queues
and Priorities").  Ten items are submitted as ten tasks; the script reports each
one as it completes (``add_done_callback``), waits for the whole batch, and does
the same again through the standard ``concurrent.futures`` API
(``eng.as_executor()`` gives real Futures for ``as_completed``).

    python examples/batch_processing.py
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any

from cytask import Engine, Priority, TaskHandle


def process_batch_item(item_id: int) -> dict[str, Any]:
    """Process one batch item (10-50 ms instead of 1 s)."""
    time.sleep(0.01 * (1 + item_id % 5))
    return {"item_id": item_id, "processed": True}


def main() -> None:
    with Engine(workers=4, max_workers=10) as eng:
        finished = threading.Semaphore(0)

        def on_done(h: TaskHandle[dict[str, Any]]) -> None:
            print(f"  item {h.result(timeout=0)['item_id']} done (task {h.task_id})", flush=True)
            finished.release()

        t0 = time.perf_counter()
        batch = [
            # the guide used `lambda item=i: process_batch_item(item)`; arguments work directly
            eng.add_task(process_batch_item, i, priority=Priority.NORMAL)
            for i in range(10)
        ]
        for h in batch:
            h.add_done_callback(on_done)
        print(
            {
                "message": "Batch processing started",
                "batch_tasks": [h.task_id for h in batch],
                "total_items": len(batch),
            }
        )
        for _ in batch:
            if not finished.acquire(timeout=10):
                raise TimeoutError("a batch item did not report back within 10 s")
        results = [h.result(timeout=10) for h in batch]
        ok = sum(r["processed"] for r in results)
        print(f"batch of {len(batch)}: {ok} processed in {time.perf_counter() - t0:.2f} s")

        with eng.as_executor() as executor:  # closing the view leaves the engine running
            futures = {executor.submit(process_batch_item, i): i for i in range(10, 20)}
            done_order = [futures[f] for f in concurrent.futures.as_completed(futures, timeout=10)]
        print(f"executor batch completed in this order: {done_order}")
    print("engine shut down")


if __name__ == "__main__":
    main()
