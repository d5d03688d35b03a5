"""Priorities and statuses, shared by the native core and the Python API."""

from __future__ import annotations

import enum

__all__ = ["Priority", "TaskPriority", "TaskStatus"]


class Priority(enum.IntEnum):
    """Queue levels, highest first.  A worker always takes the oldest task of the
    highest non-empty level: strict priority, FIFO within a level."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3


#: Catzilla's name for the same enum.
TaskPriority = Priority


class TaskStatus(enum.StrEnum):
    """Where a task is in its life.  The last three are terminal."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED)
