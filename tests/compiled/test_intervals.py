"""Arithmetic proven unable to overflow goes unchecked, and every answer stays Python's.

``compiler/_intervals.py`` ranges int locals from the source (masks, ``%``, ``//``,
``range`` targets, constants) and leaves ``+ - *`` unchecked where every result fits in
int64.  Each test pairs a proof at an edge with its neighbour just past it: the first
compiles to a plain operator, the second keeps its check, and both give Python's answer
for arguments that drive them to the edge.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import check, outcome, same

import cytask
from cytask.compiler import compile_task
from cytask.compiler._intervals import SAFE_ARITH, mark_safe_arithmetic

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
FULL = (INT64_MIN, INT64_MAX)
EDGES = [0, 1, -1, 2**31 - 1, 2**32, 2**62, INT64_MAX, INT64_MIN, -(2**31)]


def marked(source: str, params: dict[str, Any] | None = None, **consts: Any) -> list[str]:
    """The ``+ - *`` (and augmented assignments) of `source` proven safe, as source."""
    fn = ast.parse(source).body[0]
    assert isinstance(fn, ast.FunctionDef)
    args = {a.arg: FULL for a in fn.args.args} if params is None else params
    mark_safe_arithmetic(fn, args, consts, {})
    return [ast.unparse(n) for n in ast.walk(fn) if getattr(n, SAFE_ARITH, False)]


def source(fn: Callable[..., Any]) -> str:
    ct = compile_task(fn)
    assert ct.analysis is not None and ct.analysis.numba_source is not None, ct.fallback_reason
    return ct.analysis.numba_source


# -- the proofs, one operator at a time ----------------------------------------------------


@pytest.mark.parametrize(
    "expr, safe",
    [
        ("(a & 0x7FFFFFFF) * 0xFFFFFFFF", True),  # < 2**31 * 2**32
        ("(a & 0x7FFFFFFF) * 0x100000002", True),  # 2**63 - 2: still fits
        ("(a & 0x7FFFFFFF) * 0x100000003", False),  # 2**63 + 2**31 - 3 does not
        ("(a & 0xFFFFFFFF) * (b & 0x7FFFFFFF)", True),
        ("(a & 0xFFFFFFFF) * (b & 0xFFFFFFFF)", False),
        ("(a % 1000) - (b % 1000)", True),
        ("(a % 1000) * -(b % 1000)", True),
        ("(a // 4) + (b // 4)", True),  # each within [-2**61, 2**61)
        ("(a // 2) + (b // 2)", True),  # [-2**63, 2**63 - 2]: fits, just
        ("(a // 2) + (b // 2) + 2", False),
        ("(a >> 1) - (b >> 1)", True),  # [-2**63 + 1, 2**63 - 1]
        ("(a >> 1) - (b >> 1) - 2", False),
        ("abs(a % 7 - 3) * 5", True),
        ("min(a & 255, b) * 1000", False),  # b is unbounded below
        ("max(a & 255, b & 15) * 1000", True),
        ("(a | 1) * 2", False),  # | with a negative a: unbounded
        ("((a & 255) | (b & 1023)) * 2**52", True),
        ("(a ^ b) + 1", False),
        ("-(a & 0xFF) * (b & 0xFF)", True),
        ("~(a & 0xFF) * 3", True),
        ("(a & 0xFF if a > 0 else b & 0xFFFF) * 2**46", True),
        ("(a & 0xFF if a > 0 else b) * 2", False),
        ("a * 1", True),  # all of int64, times 1
        ("a * 2", False),  # an argument: all of int64
        ("(a & 0xFF) * 2**70", False),  # (a literal past int64)
        ("(a / 2) * 2", False),  # a float: never ranged
        ("(a ** 2) + 1", False),  # may be a float (a negative exponent)
        ("(a < b) + 1", False),  # a bool: never ranged
        ("int(a & 0xFF) + 1", True),
    ],
)
def test_each_operator_is_ranged_soundly(expr: str, safe: bool) -> None:
    got = marked(f"def f(a, b):\n    return {expr}\n")
    outer = ast.unparse(ast.parse(expr, mode="eval").body)
    assert (outer in got) is safe, got


def test_a_float_or_unhinted_argument_is_never_ranged() -> None:
    text = "def f(a, b):\n    return (a & 0xFF) * 2 + b * 0\n"
    assert marked(text, {"a": None, "b": None}) == []


def test_locals_are_ranged_over_every_store_to_a_fixed_point() -> None:
    lcg = """
def f(n, seed):
    x = 1
    acc = 0
    for i in range(n):
        x = (x * 1103515245 + 12345 + i) & 0x7FFFFFFF
        acc = (acc + x) & 0xFFFFFFF
    return acc + seed
"""
    got = marked(lcg)
    assert "x * 1103515245" in got and "x * 1103515245 + 12345" in got
    assert "acc + x" in got
    assert "x * 1103515245 + 12345 + i" not in got  # i < n: unbounded
    assert "acc + seed" not in got
    # a local seeded from an argument is as wide as the argument
    assert "x * 1103515245" not in marked(lcg.replace("x = 1", "x = seed"))


def test_a_growing_local_is_widened_not_trusted() -> None:
    fib = """
def f(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
"""
    assert marked(fib) == []
    doubling = """
def f(n):
    x = 1
    for _ in range(n):
        x = x * 2
    return x
"""
    assert marked(doubling) == []


def test_range_targets_lie_between_start_and_stop() -> None:
    text = """
def f(n):
    t = 0
    for i in range(-100, 100, 7):
        t = i * 2**50
    for j in range(n & 0xFFFF):
        t = j * 2**40
    for k in range(n):
        t = k * 2
    return t
"""
    got = marked(text)
    assert "i * 2 ** 50" in got and "j * 2 ** 40" in got and "k * 2" not in got


def test_stores_the_analysis_does_not_follow_give_no_range() -> None:
    text = """
def f(a, t):
    x = 5
    x, y = t
    z = 7
    z += a
    return (x + 1) + (y + 1) + (z + 1)
"""
    assert marked(text) == []


def test_frozen_module_constants_have_their_value() -> None:
    text = "def f(a):\n    return (a & 0xFF) * SCALE\n"
    assert marked(text, SCALE=2**54) == ["(a & 255) * SCALE"]
    assert marked(text, SCALE=2**56) == []
    assert marked(text, SCALE=2.5) == []  # a float
    assert marked(text, SCALE=True) == []  # a bool


def test_a_builtin_shadowed_by_a_local_is_not_trusted() -> None:
    text = "def f(a, abs):\n    return abs(a & 0xFF) * 2**60\n"
    assert marked(text) == []


# -- compiled, against Python --------------------------------------------------------------


def mask_mul_fits(a: int) -> int:
    return (a & 0x7FFFFFFF) * 0x100000002


def mask_mul_overflows(a: int) -> int:
    return (a & 0x7FFFFFFF) * 0x100000003


def mod_sub(a: int, b: int) -> int:
    x = a % 1000
    y = b % 1000
    return (x - y) * (x + y) * 2**40


def halves(a: int, b: int) -> int:
    return (a // 2) + (b // 2) + 2


def lcg_counted(n: int, k: int) -> int:
    x = 1
    acc = 0
    for _ in range(n):
        for j in range(k):
            x = (x * 1103515245 + 12345 + j) & 0x7FFFFFFF
        acc = (acc + x) & 0xFFFFFFF
    return acc


@pytest.mark.parametrize("a", EDGES)
def test_edges_give_pythons_answer(a: int, engine: cytask.Engine) -> None:
    check(mask_mul_fits, (a,), engine)
    check(mask_mul_overflows, (a,), engine)  # 2**31 - 1: a Python int past int64
    for b in EDGES:
        check(mod_sub, (a, b), engine)
        check(halves, (a, b), engine)


def test_the_proven_operators_compile_unchecked_and_the_others_stay_checked() -> None:
    """Unchecked, but wrapping: not Numba's ``+``, whose overflow LLVM may assume away.

    (The proof holds until a check raises the flag; the dummy values after it may
    overflow, and undefined behaviour there could cost the check that raised it.)
    """
    assert "ct_mul_wrapped(" in source(mask_mul_fits) and "ct_mul(" not in source(mask_mul_fits)
    assert "ct_mul(" in source(mask_mul_overflows)
    assert "ct_add(" in source(halves)
    lcg = source(lcg_counted)
    plain = "ct_add_wrapped(ct_mul_wrapped(x, 1103515245), 12345)"
    assert f"ct_add({plain}, j, __ct_err)" in lcg  # j < k: unbounded
    assert "ct_add_wrapped(acc, x)" in lcg


@pytest.mark.parametrize("args", [(0, 0), (3, 0), (50, 7), (3, 300), (300, 3)])
def test_a_ranged_loop_gives_pythons_answer(args: tuple[int, int], engine: cytask.Engine) -> None:
    check(lcg_counted, args, engine)


def first_times_one(arr: np.ndarray, k: int) -> float:
    return float(arr[0]) + k * 1  # k * 1 cannot overflow: a wrapped multiply


def test_a_proven_operator_on_a_float_given_for_an_int_hint() -> None:
    """The dispatcher compiles for what it is given: a float for ``k: int`` still runs.

    (``plan()`` sends such a call to Python; the compiled callable itself must not
    fail to type and turn the dispatcher off for good.)
    """
    assert "ct_mul_wrapped(k, 1)" in source(first_times_one)
    ct = compile_task(first_times_one)
    assert ct._callable is not None
    arr = np.array([1.5, 2.0])
    call = ct._callable
    for k in (2.5, 3, -(2**63)):
        got = outcome(lambda k=k: call(arr, k))
        assert same(got, outcome(lambda k=k: first_times_one(arr, k))), got
    assert ct.fallback_reason is None, ct.fallback_reason
