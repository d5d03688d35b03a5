"""The checks stay exact where they were made cheaper: the C entry point's return code.

``_nbhelpers`` keeps the hand-back flag in a register (a stack slot LLVM promotes)
and checks ``x + c`` / ``x - c`` for a constant ``c`` with one comparison.  These
tests call the C entry point directly, so they see its return code: 0 with
Python's value wherever the value fits in int64, ``CT_RC_PYTHON`` (2) wherever it
does not, including when the flag goes up before an early ``return``.
"""

from __future__ import annotations

import ctypes
from typing import Any

import pytest
from conftest import outcome, run_compiled, same
from hypothesis import example, given, settings
from hypothesis import strategies as st

import compiled_corpus as corpus
import cytask
from cytask.compiler import CompiledTask, compile_task

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
CT_RC_PYTHON = 2
INTS = st.integers(INT64_MIN, INT64_MAX) | st.sampled_from(
    [0, 1, -1, 2, -2, INT64_MAX, INT64_MAX - 1, INT64_MIN, INT64_MIN + 1]
)
_ENTRY = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p)
_compiled: dict[str, CompiledTask] = {}


def compiled(name: str) -> CompiledTask:
    if name not in _compiled:
        ct = compile_task(getattr(corpus, name))
        assert ct.backend == "numba" and ct.native is not None, ct.fallback_reason
        _compiled[name] = ct
    return _compiled[name]


def call_entry(ct: CompiledTask, *args: int) -> tuple[int, int]:
    """(return code, result slot as int64) of one direct call of the C entry point."""
    assert ct.native is not None
    slots = (ctypes.c_int64 * len(args))(*args)
    result = ctypes.c_int64(0)
    rc = _ENTRY(ct.native.address)(slots, ctypes.byref(result))
    return rc, result.value


def expect_exact(ct: CompiledTask, args: tuple[int, ...]) -> None:
    """rc 0 with Python's value when that value fits in int64, rc 2 when it does not."""
    want = ct.python_fn(*args)
    rc, got = call_entry(ct, *args)
    if INT64_MIN <= want <= INT64_MAX:
        assert (rc, got) == (0, want), f"{args}: Python {want}, compiled rc {rc} {got}"
    else:
        assert rc == CT_RC_PYTHON, f"{args}: Python {want} (past int64), compiled {got}"


@settings(max_examples=300, deadline=None, database=None)
@given(INTS, st.integers(0, 6))
@example(INT64_MAX, 0)  # x + 1
@example(INT64_MAX, 1)  # 1 + x
@example(INT64_MIN, 2)  # x - 1
@example(1, 3)  # x + INT64_MAX
@example(0, 3)
@example(-2, 4)  # x - INT64_MAX
@example(-1, 4)  # == INT64_MIN, fits
@example(INT64_MIN, 6)  # 5 - x, the general check
def test_constant_add_sub_hand_back_exactly(x: int, k: int) -> None:
    expect_exact(compiled("add_consts"), (x, k))


@pytest.mark.parametrize(
    ("n", "start"),
    [
        (10, 0),  # reaches 7: the early return
        (10, 100),
        (0, INT64_MAX),  # the loop never runs
        (1, INT64_MAX - 1),  # c + 1 == INT64_MAX, fits
        (1, INT64_MAX),  # c + 1 overflows, then `return -1` with the flag up
        (5, INT64_MAX),
        (10, INT64_MAX - 2),  # overflows on the third increment
        (10, INT64_MIN),
    ],
)
def test_flag_leaves_through_every_return(n: int, start: int) -> None:
    expect_exact(compiled("count_from"), (n, start))


@settings(max_examples=100, deadline=None, database=None)
@given(st.integers(0, 50), INTS)
def test_counter_matches_python(n: int, start: int) -> None:
    expect_exact(compiled("count_from"), (n, start))


def test_constant_checks_through_the_engine(engine: cytask.Engine) -> None:
    ct = compiled("add_consts")
    for args in [(INT64_MAX, 0), (INT64_MIN, 2), (3, 0), (-5, 6)]:
        want = outcome(lambda a=args: corpus.add_consts(*a))
        assert same(want, run_compiled(ct, args, engine))


@pytest.mark.parametrize("x", [0, 3, 6, 2**62, -(2**63)])
def test_function_without_return_value(x: Any) -> None:
    ct = compile_task(corpus.no_return)
    plan = ct.plan((x,), {})
    assert callable(plan)
    assert plan(x) is None and corpus.no_return(x) is None
