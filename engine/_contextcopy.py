"""Run a task in a copy of its submitter's ``contextvars`` context, as asyncio does.

``Engine(copy_context=True)`` copies the context at submit (``contextvars.copy_context()``,
a constant-time copy of an immutable mapping) and runs the task inside it, so request
ids, tracing spans and framework state set by the submitter are there; what the task
sets stays in its copy.  An ``async def`` task's coroutine runs in a task of the
engine's event loop: the submitter's variables are set in that task's own context
before the body starts.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Coroutine
from types import CoroutineType, FunctionType
from typing import Any

from cytask import _aio

__all__ = ["in_context"]

_copy_context = contextvars.copy_context

_GENERATOR_FLAGS = 0x20 | 0x200  # CO_GENERATOR | CO_ASYNC_GENERATOR
_COROUTINE_FLAG = 0x80  # CO_COROUTINE


def _run_in(ctx: contextvars.Context, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """On the worker: ``fn(*args, **kwargs)`` inside `ctx`; an ``async def`` task's
    coroutine gets the context's variables on the engine's loop."""
    value = ctx.run(fn, *args, **kwargs)
    if type(value) is CoroutineType:  # an async task: its body runs on the loop
        return _with_vars(ctx, value)
    return value


class _Bound(functools.partial[Any]):
    """``partial(ctx.run, fn)`` or ``partial(_run_in, ctx, fn)`` (made in C, no
    ``__init__``), named as ``fn`` is."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        # only for names the partial lacks: a handle asks for its function's __qualname__
        if name == "__qualname__":
            return getattr(self.args[-1], "__qualname__", None)
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"<{self.args[-1]!r} in a copied context>"


# the async runner's private per-task variables (outside _aio's public names)
_current = _aio._current  # type: ignore[attr-defined]
_current_runner = _aio._current_runner

# the engine's own per-task variables: never carried from a submitter to its task
_INTERNAL: frozenset[contextvars.ContextVar[Any]] = frozenset({_current, _current_runner})


async def _with_vars(ctx: contextvars.Context, coro: Coroutine[Any, Any, Any]) -> Any:
    for var, value in ctx.items():
        if var not in _INTERNAL:
            var.set(value)
    return await coro


def _forget_internal() -> None:
    _current.set(None)
    _current_runner.set(None)


def in_context(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` bound to a copy of the caller's context, keeping its name for the handle.

    It runs on every submit, so it is built from C-level parts: a sync task becomes
    ``partial(ctx.run, fn)``; only a function that may return a coroutine (``async
    def``, or any callable that is not a plain function) goes through ``_run_in``.
    Generator functions are returned as they are, for the engine's check to reject.
    """
    ctx = _copy_context()
    if _current in ctx:  # submitted from inside an async task: that is not this task
        ctx.run(_forget_internal)
    if type(fn) is FunctionType:
        flags = fn.__code__.co_flags
        if flags & _GENERATOR_FLAGS:
            return fn
        if not flags & _COROUTINE_FLAG:
            return _Bound(ctx.run, fn)
    return _Bound(_run_in, ctx, fn)
