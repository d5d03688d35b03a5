"""``EngineStats``: every figure Catzilla documents, computed from the core's counters."""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import Any

__all__ = ["EngineStats", "StatsSampler"]

_WINDOW_S = 10.0


class StatsSampler:
    """Keeps (time, processed) samples so tasks_per_second is a sliding-window rate."""

    def __init__(self) -> None:
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()

    def rate(self, now: float, processed: int) -> float:
        with self._lock:
            samples = self._samples
            samples.append((now, processed))
            while len(samples) > 2 and now - samples[1][0] >= _WINDOW_S:
                samples.popleft()
            t0, p0 = samples[0]
            if now - t0 <= 0:
                return 0.0
            return (processed - p0) / (now - t0)


@dataclasses.dataclass(frozen=True)
class EngineStats:
    """A snapshot; fields may be a little stale by the time you read them.

    Queue sizes and worker counts are read from the native core's counters;
    ``tasks_per_second`` is a sliding 10 s window over successive ``stats()``
    calls; execution-time percentiles come from a fixed-size log-scale histogram
    (4 buckets per power of two, so within about 19%); ``queue_pressure`` is the
    queued fraction of total queue capacity.

    The counters, each counted once, when it happens:

    * ``submitted_tasks``: tasks submitted (accepted or rejected with QueueFull).
    * ``total_tasks_processed``: runs a worker finished, whatever the outcome; a
      retried task counts once per attempt, a task that ran past its time limit
      counts when its thread returns; a task rejected by ``QueueFull`` never ran
      and is not counted.
    * ``succeeded_tasks`` / ``failed_tasks`` / ``cancelled_tasks``: tasks that
      ended so, once per task (a retried task counts when its last attempt
      fails).  ``failed_tasks`` includes ``QueueFull`` rejections and time-outs.
    * ``retried_tasks``: retries scheduled.
    * ``error_rate``: ``failed / (succeeded + failed)``, the share of the tasks
      that ended (not cancelled) which failed: always in [0, 1].
    """

    critical_queue_size: int
    high_queue_size: int
    normal_queue_size: int
    low_queue_size: int
    total_queued: int
    active_workers: int
    idle_workers: int
    total_workers: int
    scheduled_tasks: int
    total_tasks_processed: int
    succeeded_tasks: int
    failed_tasks: int
    retried_tasks: int
    cancelled_tasks: int
    submitted_tasks: int
    async_tasks_running: int
    error_rate: float
    tasks_per_second: float
    avg_execution_time_ms: float
    p95_execution_time_ms: float
    p99_execution_time_ms: float
    avg_worker_utilization: float
    queue_pressure: float
    memory_usage_mb: float
    uptime_seconds: float
    compiled_numba: int
    compiled_cython: int
    compile_fallbacks: int
    compile_time_ms: float
    # threads still inside a task that passed its time limit (not counted in
    # total_workers), and worker threads that could not be started (thread limit)
    stuck_workers: int = 0
    worker_spawn_failures: int = 0

    @classmethod
    def from_core(
        cls,
        raw: dict[str, Any],
        engine: Any,
        sampler: StatsSampler,
        *,
        scheduled: int,
        retried: int,
        async_running: int,
        compile: dict[str, Any],
    ) -> EngineStats:
        sizes = raw["queue_sizes"]
        total_queued = sum(sizes)
        workers = raw["total_workers"]
        active = min(raw["active_workers"], workers)
        processed = raw["processed"]
        succeeded, failed = raw["succeeded"], raw["failed"]
        uptime = raw["uptime_ns"] / 1e9
        return cls(
            critical_queue_size=sizes[0],
            high_queue_size=sizes[1],
            normal_queue_size=sizes[2],
            low_queue_size=sizes[3],
            total_queued=total_queued,
            active_workers=active,
            idle_workers=max(0, workers - active),
            total_workers=workers,
            scheduled_tasks=scheduled,
            total_tasks_processed=processed,
            succeeded_tasks=succeeded,
            failed_tasks=failed,
            retried_tasks=retried,
            cancelled_tasks=raw["cancelled"],
            submitted_tasks=raw["submitted"],
            async_tasks_running=async_running,
            error_rate=failed / (succeeded + failed) if failed else 0.0,
            tasks_per_second=sampler.rate(time.monotonic(), processed),
            avg_execution_time_ms=raw["avg_ns"] / 1e6,
            p95_execution_time_ms=raw["p95_ns"] / 1e6,
            p99_execution_time_ms=raw["p99_ns"] / 1e6,
            avg_worker_utilization=(
                min(1.0, raw["busy_ns"] / (raw["uptime_ns"] * workers))
                if workers and raw["uptime_ns"]
                else 0.0
            ),
            queue_pressure=total_queued / (engine.queue_capacity * 4),
            memory_usage_mb=_rss_mb(),
            uptime_seconds=uptime,
            stuck_workers=raw["stuck_workers"],
            worker_spawn_failures=raw["spawn_failures"],
            **compile,
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _rss_mb() -> float:
    import psutil  # imported on the first stats() call, not at import cytask

    return float(psutil.Process().memory_info().rss) / (1024 * 1024)
