"""Fake tasks for the CLI tests: duck-typed like ``@task`` objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

COUNTER = 0


class FakeTask:
    __cytask_task__ = True

    def __init__(
        self,
        fn: Callable[..., Any],
        examples: list[tuple[Any, ...]] | None = None,
        compile_to_c: bool | str = True,
    ) -> None:
        self.fn = fn
        self.examples = examples or []
        self.compile_to_c = compile_to_c

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


def _hypot2(a: int, b: int) -> int:
    return a * a + b * b


def _ratio(a: float, b: float) -> float:
    return a / b


def _bump(n):
    global COUNTER
    COUNTER += n
    return COUNTER


def _label(n):
    return n


hypot2 = FakeTask(_hypot2, examples=[(3, 4), (2**40, 2**40), (-7, 0)])
ratio = FakeTask(_ratio, examples=[(1.0, 4.0), (1.0, 0.0), (-0.0, 3.0)])
bump = FakeTask(_bump, examples=[(1,)])
label = FakeTask(_label, compile_to_c=False)
