"""``current_task()``: the handle of the task the caller is running inside."""

from __future__ import annotations

import contextvars
from typing import Any

from cytask import _core
from cytask._core import TaskHandle

__all__ = ["current_task"]

# The async task the running coroutine belongs to, set by the engine's event loop
# (cytask._aio).  It lives here, not in _aio, so `import cytask` needs no asyncio.
current_async: contextvars.ContextVar[TaskHandle[Any] | None] = contextvars.ContextVar(
    "cytask_current_task", default=None
)


def current_task() -> TaskHandle[Any]:
    """The running task's handle: ``.task_id``, ``.attempt``, ``.set_progress()``,
    ``.cancel_requested``.  Raises RuntimeError outside a task."""
    h = current_async.get() or _core.current_handle()
    if h is None:
        raise RuntimeError("current_task() called outside a cytask task")
    return h
