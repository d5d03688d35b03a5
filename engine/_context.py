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

# The durable run (cytask._durable._Run) a worker thread or coroutine runs now, set by
# cytask._durable; here for the same reason (no store code loads without a store).
current_durable_run: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "cytask_durable_run", default=None
)


def current_task() -> TaskHandle[Any]:
    """The running task's handle: ``.task_id``, ``.attempt``, ``.set_progress()``,
    ``.cancel_requested`` (a ``DurableHandle`` for a task from a store).  Raises
    RuntimeError outside a task."""
    run = current_durable_run.get()  # a task from a store: the store's view of it
    if run is not None:
        return run.current_handle()  # type: ignore[no-any-return]
    h = current_async.get() or _core.current_handle()
    if h is None:
        raise RuntimeError("current_task() called outside a cytask task")
    return h
