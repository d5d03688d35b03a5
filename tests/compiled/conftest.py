"""Fixtures for the compile-stage tests: a private cache folder and an engine."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import cytask
from cytask.compiler import CompiledTask, NativeEntry, compile_task


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every compile in this session writes into a fresh cache, never ~/.cache."""
    path = str(tmp_path_factory.mktemp("cytask-cache"))
    old = os.environ.get("CYTASK_CACHE_DIR")
    os.environ["CYTASK_CACHE_DIR"] = path
    yield path
    if old is None:
        os.environ.pop("CYTASK_CACHE_DIR", None)
    else:
        os.environ["CYTASK_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def engine() -> Iterator[cytask.Engine]:
    eng = cytask.Engine(workers=2)
    yield eng
    eng.shutdown(wait=True, timeout=30)


Outcome = tuple[str, Any]


def outcome(run: Callable[[], Any]) -> Outcome:
    try:
        return "value", run()
    except Exception as exc:
        return "raises", type(exc)


def same(a: Outcome, b: Outcome) -> bool:
    """Python is the reference: same exception type, or same value of the same type."""
    if a[0] != b[0]:
        return False
    if a[0] == "raises":
        return bool(a[1] is b[1])
    x, y = a[1], b[1]
    if type(x) is not type(y):
        return False
    if isinstance(x, complex):  # (a float ** a fraction: nan parts, signed zeros)
        return same(("value", x.real), ("value", y.real)) and same(
            ("value", x.imag), ("value", y.imag)
        )
    if isinstance(x, float) and math.isnan(x):
        return math.isnan(y)
    if isinstance(x, float) and x == 0.0:
        return math.copysign(1.0, x) == math.copysign(1.0, y)
    return bool(x == y)


def run_compiled(ct: CompiledTask, args: tuple[Any, ...], engine: cytask.Engine) -> Outcome:
    """Run one call the way the engine will: through plan()."""
    plan = ct.plan(args, {})
    if isinstance(plan, NativeEntry):
        h = engine.submit_native(
            plan.address, args, plan.arg_kinds, plan.result_kind, fallback=ct.python_fn
        )
        return outcome(lambda: h.result(timeout=60))
    if plan is not None:
        return outcome(lambda: plan(*args))
    return outcome(lambda: ct.python_fn(*args))


def check(fn: Callable[..., Any], args: tuple[Any, ...], engine: cytask.Engine) -> CompiledTask:
    """Compile ``fn``, run it on ``args`` compiled and in Python: the same outcome."""
    ct = compile_task(fn)
    want = outcome(lambda: fn(*args))
    got = run_compiled(ct, args, engine)
    assert same(want, got), f"{fn.__name__}{args!r}: Python {want!r}, compiled {got!r}"
    return ct
