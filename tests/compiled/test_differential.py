"""Compiled and Python give the same answers: hypothesis over ints and floats.

Python is the reference.  Each example runs through ``CompiledTask.plan`` the way
the engine will: native entries through ``Engine.submit_native`` (no GIL),
callables directly.  Any difference in value, type or exception is a bug.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import outcome, run_compiled, same
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import compiled_corpus as corpus
import cytask
from cytask.compiler import CompiledTask, compile_task

INT64 = st.integers(-(2**63), 2**63 - 1)
SMALL = st.integers(-(10**6), 10**6)
EDGE = st.sampled_from([0, 1, -1, 2, -2, 2**31, 2**53, 2**53 + 1, 2**62, 2**63 - 1, -(2**63)])
INTS = INT64 | SMALL | EDGE
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 1.0, -1.0, 0.5, 2.0**53, 1e308, -1e-320]
)

CASES: dict[str, Any] = {
    "add": st.tuples(INTS, INTS),
    "mul": st.tuples(INTS, INTS),
    "neg_abs": st.tuples(INTS),
    "int_div_mod": st.tuples(INTS, INTS),
    "float_div_mod": st.tuples(FLOATS, FLOATS),
    "mixed": st.tuples(INTS, FLOATS),
    "compare_mixed": st.tuples(INTS, FLOATS | INTS.map(float)),
    "int_pow": st.tuples(st.integers(-40, 40), st.integers(-3, 70)),
    "float_pow": st.tuples(FLOATS, FLOATS),
    "shifts": st.tuples(INTS, st.integers(-2, 70)),
    "float_math": st.tuples(FLOATS),
    "checked_math": st.tuples(FLOATS),
    "to_int": st.tuples(FLOATS),
    "min_max": st.tuples(SMALL, SMALL, st.floats(-1e7, 1e7)),
    "collatz": st.tuples(st.integers(-5, 10**6)),
    "is_prime": st.tuples(st.integers(-10, 10**5)),
    "int_loop": st.tuples(st.integers(-3, 3000)),
    "uses_const": st.tuples(INTS),
}

_compiled: dict[str, CompiledTask] = {}


def compiled(name: str) -> CompiledTask:
    if name not in _compiled:
        ct = compile_task(getattr(corpus, name))
        assert ct.backend == "numba" and ct.native is not None, ct.fallback_reason
        _compiled[name] = ct
    return _compiled[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_compiled_matches_python(name: str, engine: cytask.Engine) -> None:
    ct = compiled(name)

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(CASES[name])
    def check(args: tuple[Any, ...]) -> None:
        want = outcome(lambda: ct.python_fn(*args))
        got = run_compiled(ct, args, engine)
        assert same(want, got), f"{name}{args!r}: Python {want!r}, compiled {got!r}"

    check()


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("add", (2**62, 2**62)),  # overflows int64: Python's big int
        ("mul", (-(2**63), -1)),
        ("neg_abs", (-(2**63),)),
        ("int_div_mod", (-(2**63), -1)),
        ("int_div_mod", (7, 0)),  # ZeroDivisionError
        ("int_div_mod", (-7, 2)),  # floor rules: -4, remainder 1
        ("float_div_mod", (-7.5, 2.0)),
        ("float_div_mod", (1.0, 0.0)),
        ("int_pow", (2, -1)),  # Python gives a float
        ("int_pow", (3, 40)),  # past int64
        ("float_pow", (-8.0, 1 / 3)),  # Python gives a complex number
        ("float_pow", (10.0, 400.0)),  # OverflowError
        ("checked_math", (-1.0,)),  # ValueError: math domain error
        ("checked_math", (0.0,)),
        ("checked_math", (1e5,)),  # exp overflows
        ("float_math", (float("inf"),)),
        ("to_int", (float("nan"),)),
        ("to_int", (1e19,)),
        ("compare_mixed", (2**53 + 1, 2.0**53)),  # exact comparison
        ("shifts", (1, 64)),
        ("shifts", (5, -1)),  # ValueError: negative shift count
    ],
)
def test_edge_cases_match_python(name: str, args: tuple[Any, ...], engine: cytask.Engine) -> None:
    ct = compiled(name)
    assert ct.plan(args, {}) is ct.native
    want = outcome(lambda: ct.python_fn(*args))
    got = run_compiled(ct, args, engine)
    assert same(want, got), f"{name}{args!r}: Python {want!r}, compiled {got!r}"


def test_pi_estimate_matches_python(engine: cytask.Engine) -> None:
    ct = compiled("pi_lcg")
    for args in [(1, 1), (1000, 7), (100_000, 12345)]:
        assert same(outcome(lambda a=args: corpus.pi_lcg(*a)), run_compiled(ct, args, engine))


@settings(max_examples=100, deadline=None, database=None)
@given(st.tuples(INTS | FLOATS, INTS | FLOATS))
@example((7, -1))
@example((2**62, 3))
def test_dispatcher_matches_python(args: tuple[Any, Any]) -> None:
    ct = compile_task(corpus.poly)
    plan = ct.plan(args, {}) or corpus.poly
    assert same(outcome(lambda: corpus.poly(*args)), outcome(lambda: plan(*args)))


def test_dispatcher_turns_off_where_numba_would_change_a_type() -> None:
    ct = compile_task(corpus.poly)
    plan = ct.plan((0, -1.0), {})
    assert callable(plan)
    assert same(outcome(lambda: plan(0, -1.0)), ("value", 0))  # Python's int, not 0.0
    assert ct.backend == "python" and ct.plan((0, -1.0), {}) is None
    assert ct.fallback_reason is not None and "change result types" in ct.fallback_reason


@settings(max_examples=60, deadline=None, database=None)
@given(
    hnp.arrays(
        np.float64,
        st.integers(0, 50),
        elements=st.floats(-1e6, 1e6, allow_nan=False),
    )
)
def test_numpy_array_loop_matches_python(a: np.ndarray) -> None:
    ct = compile_task(corpus.array_sum)
    plan = ct.plan((a,), {})
    assert callable(plan)
    assert float(plan(a)) == float(corpus.array_sum(a))


def test_numpy_index_errors_match_python() -> None:
    ct = compile_task(corpus.array_index)
    a = np.arange(4, dtype=np.float64)
    plan = ct.plan((a, 9), {})
    assert callable(plan)
    assert plan(a, -1) == corpus.array_index(a, -1)
    with pytest.raises(IndexError):
        plan(a, 9)
    assert ct.plan((a.astype(np.int32), 1), {}) is None  # int32 wraps differently
