"""cytask: in-process background tasks on a lock-free native core.

from cytask import Engine, Priority

with Engine(workers=2) as eng:
    h = eng.submit(pow, 2, 10)
    print(h.result())           # 1024
"""

from cytask import _core
from cytask._core import TaskHandle
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
from cytask._stats import EngineStats

_core._bind_enums(TaskStatus, Priority, CancelledError)
_core._bind_errors(EngineClosed, QueueFull, native_error_for)

__version__ = "0.1.0"

__all__ = [
    "CancelledError",
    "CytaskError",
    "Engine",
    "EngineClosed",
    "EngineStats",
    "InvalidTaskOptions",
    "NativeTaskError",
    "Priority",
    "QueueFull",
    "TaskHandle",
    "TaskPriority",
    "TaskStatus",
    "TaskTimeout",
]
