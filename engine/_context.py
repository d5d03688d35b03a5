"""``current_task()``: the handle of the task the caller is running inside."""

from __future__ import annotations

from typing import Any

from cytask import _core
from cytask._aio import current_async_handle
from cytask._core import TaskHandle

__all__ = ["current_task"]


def current_task() -> TaskHandle[Any]:
    """The running task's handle: ``.task_id``, ``.attempt``, ``.set_progress()``,
    ``.cancel_requested``.  Raises RuntimeError outside a task."""
    h = current_async_handle() or _core.current_handle()
    if h is None:
        raise RuntimeError("current_task() called outside a cytask task")
    return h
