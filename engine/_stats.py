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
    """A snapshot; fields may be a little stale by the time you read them."""

    critical_queue_size: int
    high_queue_size: int
    normal_queue_size: int
    low_queue_size: int
    total_queued: int
    active_workers: int
    idle_workers: int
    total_workers: int
    total_tasks_processed: int
    failed_tasks: int
    cancelled_tasks: int
    submitted_tasks: int
    error_rate: float
    tasks_per_second: float
    avg_execution_time_ms: float
    p95_execution_time_ms: float
    p99_execution_time_ms: float
    avg_worker_utilization: float
    queue_pressure: float
    uptime_seconds: float

    @classmethod
    def from_core(cls, raw: dict[str, Any], engine: Any, sampler: StatsSampler) -> EngineStats:
        sizes = raw["queue_sizes"]
        total_queued = sum(sizes)
        workers = raw["total_workers"]
        active = min(raw["active_workers"], workers)
        processed = raw["processed"]
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
            total_tasks_processed=processed,
            failed_tasks=raw["failed"],
            cancelled_tasks=raw["cancelled"],
            submitted_tasks=raw["submitted"],
            error_rate=raw["failed"] / processed if processed else 0.0,
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
            uptime_seconds=uptime,
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
