"""Module-level Django tasks for tests/contrib/test_django.py (imported after settings)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

try:
    from django.tasks import TaskContext, task
except ImportError:
    from django_tasks import TaskContext, task  # type: ignore[assignment]

gate = threading.Event()
order: list[str] = []


@task
def noop() -> None:
    return None


@task
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": args, "kwargs": kwargs}


@task
def add(x: int, y: int) -> int:
    return x + y


@task
async def async_add(x: int, y: int) -> int:
    await asyncio.sleep(0)
    return x + y


@task
def fail_value_error() -> None:
    raise ValueError("This Task failed due to ValueError")


@task
def fail_system_exit() -> None:
    raise SystemExit(3)


class ComplexError(Exception):
    def __init__(self, obj: object) -> None:
        super().__init__("complex")
        self.obj = obj


@task
def fail_complex() -> None:
    raise ComplexError(threading.Lock())


@task
def complex_return_value() -> object:
    return {"lock": threading.Lock()}


@task(takes_context=True)
def with_context(context: TaskContext, x: int) -> list[Any]:
    return [context.attempt, context.task_result.id, x]


@task
def wait_gate() -> bool:
    return gate.wait(30)


@task
def record(name: str) -> str:
    order.append(name)
    return name


request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


@task
def read_request_id() -> str | None:
    return request_id.get()


@task
async def aread_request_id() -> str | None:
    await asyncio.sleep(0)
    return request_id.get()


@task
def active_language() -> str | None:
    from django.utils import translation

    return translation.get_language()


@task
def stamp() -> int:
    """When it ran, on this process's clock (the order of a worker's runs)."""
    import time

    return time.perf_counter_ns()
