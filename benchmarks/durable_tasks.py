"""cytask tasks for benchmarks/durable.py: a no-op, and the wake benchmark's stamp.

Huey's no-op lives in durable_huey_tasks.py: each worker imports only its own system
(a SqliteHuey built at import opened its file in every cytask worker's start).
"""

from __future__ import annotations

import time

from cytask import task


@task(name="bench.noop")
def noop(i: int) -> int:
    return i


@task(name="bench.stamp")
def stamp(submitted: float) -> float:
    return time.time() - submitted  # seconds from commit to start, across processes
