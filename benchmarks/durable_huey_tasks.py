"""Huey's side of benchmarks/durable.py: a SqliteHuey no-op (file named by HUEY_DB)."""

from __future__ import annotations

import os

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

if huey is not None:

    @huey.task()
    def huey_noop(i: int) -> int:
        return i
