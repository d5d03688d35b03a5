"""Tasks for benchmarks/durable.py: a cytask no-op and a Huey (SqliteHuey) no-op.

The Huey file is named by HUEY_DB; the wake benchmark's task records when it started.
"""

from __future__ import annotations

import os
import time

from cytask import task

try:
    from huey import SqliteHuey
except ImportError:  # Huey rows are skipped
    SqliteHuey = None

# fsync=False: synchronous=OFF, laxer than cytask's NORMAL (Huey's default, FULL, fsyncs
# every commit); the ratio is measured against the faster setting
huey = (
    SqliteHuey(filename=os.environ.get("HUEY_DB", "/tmp/huey-bench.db"), fsync=False)
    if SqliteHuey
    else None
)


@task(name="bench.noop")
def noop(i: int) -> int:
    return i


@task(name="bench.stamp")
def stamp(submitted: float) -> float:
    return time.time() - submitted  # seconds from commit to start, across processes


if huey is not None:

    @huey.task()
    def huey_noop(i: int) -> int:
        return i
