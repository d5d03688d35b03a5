"""Auto-scaling between ``workers`` and ``max_workers``.

Python threads blocked in I/O or sleeps hold a worker without using a core.  The
supervisor grows the pool when work is queued, every worker has been inside its
current task for a while, and the process is not busy computing (so more threads
would not just fight over the GIL).  Workers that idle for ``worker_idle_timeout``
seconds retire on their own (in the native core) down to ``workers``.

While there is nothing to grow for, the supervisor sleeps in the native core; the
first submit that finds no idle worker wakes it, so an idle engine costs no CPU.

A worker thread that cannot be started (the system's thread limit) does not stop
the supervisor: the pool stays as large as it got (a RuntimeWarning and
``stats().worker_spawn_failures`` say so) and growing is tried again after ``_PARK``.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import TYPE_CHECKING

from cytask import _core

if TYPE_CHECKING:
    from cytask._engine import Engine

__all__ = ["Supervisor"]

_TICK = 0.0005  # how often the supervisor looks while work waits
_PARK = 1.0  # longest sleep while nothing waits (also bounds the shutdown delay)
_BLOCKED_NS = 500_000  # a worker in the same task this long counts as blocked
_CPU_BUSY = 0.9  # process CPU (cores) above which more threads would fight over the GIL


class Supervisor:
    def __init__(self, engine: Engine, max_workers: int) -> None:
        # weakly: a dropped engine is collected (Engine._orphaned), as its workers
        # hold none either
        self._engine = weakref.ref(engine)
        self._max = max_workers
        self._stopped = False
        self.grown = 0
        self._thread = threading.Thread(
            target=self._run, name=f"{engine.name}-autoscale", daemon=True
        )
        self._thread.start()

    def stop(self, engine: Engine) -> None:
        """Called by `engine`'s shutdown; returns once the thread is gone (unless it
        is the calling thread)."""
        self._stopped = True
        engine._poke_grower_now()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _is_stopped(self) -> bool:
        return self._stopped

    def _run(self) -> None:
        eng = self._engine()
        if eng is None:
            return
        eng._own_thread()  # its ticks are not the application running Python
        # While asleep the supervisor holds no reference, only the core's address.
        # The core is alive meanwhile: whoever drops the last reference runs
        # Engine._orphaned, whose shutdown stops and joins this thread first; if
        # that is this thread (its own reference was the last), _stopped is set
        # before it could go to sleep.
        address = id(eng)
        cpu0, t0 = time.process_time(), time.monotonic()
        retry_at = 0.0  # after a failed spawn: no growing before this time
        while not self._stopped:
            eng = self._engine()
            if eng is None:
                return
            queued = eng._queued()
            live = eng._live()
            wait = retry_at - time.monotonic()
            if queued == 0 or live >= self._max or eng.closed or wait > 0:
                eng = None
                # _stopped is looked at inside, after the park counts this thread as
                # a waiter: stop() sets it and then pokes, so either is seen
                _core.grower_park(
                    address, min(_PARK, wait) if wait > 0 else _PARK, self._is_stopped
                )
                cpu0, t0 = time.process_time(), time.monotonic()
                continue
            time.sleep(_TICK)
            cpu1, t1 = time.process_time(), time.monotonic()
            cpu_cores = (cpu1 - cpu0) / (t1 - t0) if t1 > t0 else 0.0
            cpu0, t0 = cpu1, t1
            if eng._blocked_workers(_BLOCKED_NS) < live or cpu_cores > _CPU_BUSY:
                continue
            for _ in range(min(eng._queued(), self._max - live)):
                if eng.closed or self._stopped:
                    break
                if not eng._try_spawn_worker("growing towards max_workers"):
                    retry_at = time.monotonic() + _PARK  # at the thread limit
                    break
                self.grown += 1
