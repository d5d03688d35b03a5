"""Glue between ``@task(compile_to_c=...)`` and ``cytask.compiler``.

Nothing here imports Numba: the compile stage is imported on the first compile,
which happens on a task's first submission, off the submitter's thread (the task
runs in Python until the compiled version is ready), or ahead of time with
``Engine.warmup()`` / ``cytask compile``.  ``compile_to_c="strict"`` compiles at
decoration and raises ``CompileError`` instead of falling back.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cytask._task import Task

__all__ = ["attach_compiler", "compile_now", "compile_stats", "plan_for"]

_registry: weakref.WeakSet[Task[Any, Any]] = weakref.WeakSet()
_lock = threading.Lock()


def attach_compiler(t: Task[Any, Any]) -> None:
    _registry.add(t)
    t._compile_future = None
    t._warned = False
    if t.compile_to_c == "strict":
        from cytask.compiler import compile_task

        t._compiled = compile_task(t.fn, strict=True)


def compile_now(t: Task[Any, Any]) -> Any:
    """Compile synchronously (warmup); returns the CompiledTask."""
    if t._compiled is None:
        from cytask.compiler import compile_task

        fut = t._compile_future
        t._compiled = fut.result() if fut is not None else compile_task(t.fn)
    t._compiled.wait()
    return t._compiled


def plan_for(t: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """What to run for this call: a NativeEntry, a callable, or None (plain Python)."""
    ct = t._compiled
    if ct is None:
        fut = t._compile_future
        if fut is None:
            with _lock:
                if t._compile_future is None:
                    from cytask.compiler import compile_task_async

                    t._compile_future = compile_task_async(t.fn)
            return None
        if not fut.done():
            return None
        ct = t._compiled = fut.result()
    if not t._warned and ct.backend == "python" and getattr(ct, "state", "ready") != "building":
        t._warned = True
        from cytask.compiler import warn_fallback

        warn_fallback(ct, stacklevel=5)
    return ct.plan(args, kwargs)


def compile_stats() -> dict[str, Any]:
    """Compiled-task telemetry across every task declared with compile_to_c."""
    counts = {"numba": 0, "cython": 0, "python": 0}
    total_ms = 0.0
    for t in list(_registry):
        ct = t._compiled
        if ct is None:
            continue
        counts[ct.backend] = counts.get(ct.backend, 0) + 1
        total_ms += ct.compile_ms
    return {
        "compiled_numba": counts["numba"],
        "compiled_cython": counts["cython"],
        "compile_fallbacks": counts["python"],
        "compile_time_ms": total_ms,
    }


def registered_tasks() -> list[Task[Any, Any]]:
    return list(_registry)
