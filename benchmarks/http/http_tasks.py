"""The task of /cytask-sqlite in benchmarks/http: the web process only enqueues it, a
``cytask worker http_tasks`` process (started by run.py) runs it."""

from __future__ import annotations


def durable_noop(x: int) -> int:  # stored by name: http_tasks.durable_noop
    return x
