"""Auto-scaling between ``workers`` and ``max_workers``.

Python threads blocked in I/O or sleeps hold a worker without using a core.  The
supervisor grows the pool when work is queued, every worker has been inside its
current task for a while, and the process is not busy computing (so more threads
would not just fight over the GIL).  Workers that idle for ``worker_idle_timeout``
seconds retire on their own (in the native core) down to ``workers``.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cytask._engine import Engine

__all__ = ["Supervisor"]

_BUSY_TICK = 0.001  # while work waits
_IDLE_TICK = 0.02  # while nothing waits
_BLOCKED_NS = 1_000_000  # a worker in the same task this long counts as blocked
_CPU_BUSY = 0.9  # process CPU (cores) above which more threads would fight over the GIL


class Supervisor:
    def __init__(self, engine: Engine, max_workers: int) -> None:
        self._engine = engine
        self._max = max_workers
        self._stop = threading.Event()
        self.grown = 0
        self._thread = threading.Thread(
            target=self._run, name=f"{engine.name}-autoscale", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        eng = self._engine
        cpu0, t0 = time.process_time(), time.monotonic()
        tick = _IDLE_TICK
        while not self._stop.wait(tick):
            queued = eng._queued()
            live = eng._live()
            cpu1, t1 = time.process_time(), time.monotonic()
            cpu_cores = (cpu1 - cpu0) / (t1 - t0) if t1 > t0 else 0.0
            cpu0, t0 = cpu1, t1
            if queued == 0 or live >= self._max or eng.closed:
                tick = _IDLE_TICK
                continue
            tick = _BUSY_TICK
            if eng._blocked_workers(_BLOCKED_NS) < live or cpu_cores > _CPU_BUSY:
                continue
            for _ in range(min(queued, self._max - live)):
                if eng.closed:
                    break
                eng._spawn_worker()
                self.grown += 1
