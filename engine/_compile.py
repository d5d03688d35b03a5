"""Glue between ``@task(compile_to_c=...)`` and ``cytask.compiler``.

Nothing here imports Numba: the compile stage is imported on the first compile,
which happens on a task's first submission, off the submitter's thread (the task
runs in Python until the compiled version is ready), or ahead of time with
``Engine.warmup()`` / ``cytask compile``.  ``compile_to_c="strict"`` compiles at
decoration and raises ``CompileError`` instead of falling back (``cytask check``
defers that, with ``deferred_strict()``, so that it can report the task instead).

A background compile publishes its result on the task as soon as it finishes
(``task.backend``, ``task.fallback_reason``, ``Engine.stats()``), not at the next
submission.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cytask._task import Task

__all__ = ["attach_compiler", "compile_now", "compile_stats", "plan_for"]

_registry: weakref.WeakSet[Task[Any, Any]] = weakref.WeakSet()
_lock = threading.Lock()
#: > 0 while ``cytask check`` imports a target: strict tasks do not compile at
#: decoration (the check compiles and reports them); guarded by _lock
_defer_strict = 0


@contextlib.contextmanager
def deferred_strict() -> Iterator[None]:
    """While active, ``compile_to_c="strict"`` does not compile (or raise) at decoration."""
    global _defer_strict
    with _lock:
        _defer_strict += 1
    try:
        yield
    finally:
        with _lock:
            _defer_strict -= 1


def attach_compiler(t: Task[Any, Any]) -> None:
    _registry.add(t)
    t._compile_future = None
    t._warned = False
    if t.compile_to_c == "strict" and not _defer_strict:
        from cytask.compiler import compile_task

        t._compiled = compile_task(t.fn, strict=True)


def _publish(t: Task[Any, Any]) -> Any:
    """A callback that stores a finished compile on ``t`` (before its future resolves)."""

    def publish(ct: Any) -> None:
        t._compiled = ct

    return publish


def compile_now(t: Task[Any, Any]) -> Any:
    """Compile synchronously (warmup); returns the CompiledTask."""
    if t._compiled is None:
        from cytask.compiler import compile_task

        fut = t._compile_future
        t._compiled = fut.result() if fut is not None else compile_task(t.fn)
    t._compiled.wait()
    from cytask.compiler import warn_cache

    warn_cache(t._compiled, stacklevel=3)
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

                    t._compile_future = compile_task_async(t.fn, on_compiled=_publish(t))
            return None
        if not fut.done():
            return None
        ct = t._compiled = fut.result()
    if not t._warned and ct.backend == "python" and getattr(ct, "state", "ready") != "building":
        t._warned = True
        from cytask.compiler import warn_fallback

        warn_fallback(ct, stacklevel=5)
    if ct.notes:  # e.g. an unusable cache folder: warned once per process
        from cytask.compiler import warn_cache

        warn_cache(ct, stacklevel=5)
    plan = ct.plan(args, kwargs)
    if plan is not None and plan is ct.native and ct._fast is None:
        ct.enable_fast(t.options)  # later submissions try Core._submit_native_exact first
    return plan


def compile_stats() -> dict[str, Any]:
    """Compiled-task telemetry across every task declared with compile_to_c."""
    counts = {"numba": 0, "cython": 0, "python": 0}
    total_ms = 0.0
    for t in list(_registry):
        ct = t._compiled
        if ct is None or getattr(ct, "state", "ready") == "building":
            continue  # not decided yet: neither compiled nor a fallback
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
