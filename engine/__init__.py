"""cytask: in-process background tasks on a lock-free native core.

from cytask import task

@task(retries=3)
def add(x: int, y: int) -> int:
    return x + y

print(add.delay(1, 2).result(timeout=5))   # 3, computed on a worker thread
"""

from typing import TYPE_CHECKING, Any

from cytask import _core
from cytask._context import current_task
from cytask._core import TaskHandle, TaskOptions
from cytask._default import default_engine, set_default_engine
from cytask._engine import Engine
from cytask._enums import Priority, TaskPriority, TaskStatus
from cytask._errors import (
    CancelledError,
    CytaskError,
    EngineClosed,
    InvalidTaskOptions,
    NativeTaskError,
    QueueFull,
    TaskTimeout,
    native_error_for,
)
from cytask._task import Task, task

if TYPE_CHECKING:
    from cytask._durable import DurableHandle
    from cytask._executor import EngineExecutor
    from cytask._periodic import Periodic
    from cytask._serial import TaskFailed, WorkerLost
    from cytask._stats import EngineStats
    from cytask._store import StoreError

_core._bind_enums(TaskStatus, Priority, CancelledError)
_core._bind_errors(EngineClosed, QueueFull, native_error_for)
_core._bind_task_type(Task)

__version__ = "0.1.0"


# Loaded on first use, so `import cytask` stays fast (benchmarks/core.py --import): they
# need dataclasses and inspect, datetime, concurrent.futures' executor machinery.
_LAZY = {
    "EngineStats": "cytask._stats",
    "Periodic": "cytask._periodic",
    "EngineExecutor": "cytask._executor",
    # durable tasks (a store): json, pickle, sqlite3 load only when used
    "DurableHandle": "cytask._durable",
    "StoreError": "cytask._store",
    "TaskFailed": "cytask._serial",
    "WorkerLost": "cytask._serial",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cytask' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CancelledError",
    "CytaskError",
    "DurableHandle",
    "Engine",
    "EngineClosed",
    "EngineExecutor",
    "EngineStats",
    "InvalidTaskOptions",
    "NativeTaskError",
    "Periodic",
    "Priority",
    "QueueFull",
    "StoreError",
    "Task",
    "TaskFailed",
    "TaskHandle",
    "TaskOptions",
    "TaskPriority",
    "TaskStatus",
    "TaskTimeout",
    "WorkerLost",
    "current_task",
    "default_engine",
    "set_default_engine",
    "task",
]
