"""The exceptions cytask raises.

::

    CytaskError                      every error cytask itself raises
     +-- EngineClosed                 submit after shutdown (also a RuntimeError)
     +-- QueueFull                    a priority level stayed full for submit_timeout
     +-- TaskTimeout                  a task ran past its time limit (also a TimeoutError)
     +-- NativeTaskError              compiled code reported an error with no Python twin
     +-- InvalidTaskOptions           misuse at decoration or submit time (also a ValueError)

Misuse with the wrong type raises plain ``TypeError``; with a wrong value, plain
``ValueError`` (or ``InvalidTaskOptions``, which is one), always naming the argument,
what was expected and what came.  A task's own exception is re-raised unchanged by
``TaskHandle.result()``.  A cancelled task raises ``concurrent.futures.CancelledError``.
"""

from __future__ import annotations

from concurrent.futures import CancelledError
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cytask._core import TaskHandle

__all__ = [
    "CancelledError",
    "CytaskError",
    "EngineClosed",
    "InvalidTaskOptions",
    "NativeTaskError",
    "QueueFull",
    "TaskTimeout",
]


class CytaskError(Exception):
    """Base class of every error cytask raises itself."""


class EngineClosed(CytaskError, RuntimeError):
    """The engine was shut down: it takes no more tasks."""


class QueueFull(CytaskError):
    """A priority level stayed full for ``submit_timeout`` seconds.

    ``handle`` is the rejected task's handle, already FAILED with this error, so
    nothing is lost silently.
    """

    handle: TaskHandle[Any] | None = None


class TaskTimeout(CytaskError, TimeoutError):
    """A task ran past its time limit; its late result, if any, is discarded."""


class NativeTaskError(CytaskError):
    """Compiled code returned an error code that maps to no Python exception."""

    def __init__(self, code: int) -> None:
        super().__init__(f"native task failed with return code {code}")
        self.code = code


class InvalidTaskOptions(CytaskError, ValueError):
    """An option of ``@task`` or a submit call is unknown or out of range."""


def native_error_for(code: int) -> BaseException:
    """The exception the Python function would have raised for a native return code."""
    if code == 1:
        return ZeroDivisionError("division by zero")
    if code == 3:
        return IndexError("index out of range")
    if code == 4:
        return ValueError("math domain error")
    return NativeTaskError(code)
