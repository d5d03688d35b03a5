"""Each way the compile stage once gave another answer than Python (issue 8), pinned.

Every case runs Python and the compiled task the way the engine does (``plan``) and
asserts the same value of the same type, or the same exception; where a construct
cannot be compiled exactly, it asserts the fallback and its reason instead.
"""

from __future__ import annotations

import functools
import importlib
import math
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from conftest import check, outcome, run_compiled, same

import cytask
from cytask import Engine, task
from cytask.compiler import NativeEntry, compile_task

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
DIRECTION = 0.0
RATE = 2
NAN_LIMIT = math.nan


# -- 1. range() past int64 ------------------------------------------------------------


def first_square_over(lo: int, limit: int) -> int:
    for i in range(lo, 9223372036854775807):
        if i * i > limit:
            return i
    return -1


def count_range(a: int, b: int, c: int) -> int:
    n = 0
    for _ in range(a, b, c):
        n += 1
        if n > 100:
            break
    return n


def last_of_range(a: int, b: int, c: int) -> int:
    last = 0
    for i in range(a, b, c):
        last = i
    return last


def range_len(a: int, b: int) -> int:
    return len(range(a, b))


@pytest.mark.parametrize(
    ("fn", "args"),
    [
        (first_square_over, (-3, 50)),
        (count_range, (INT64_MIN, INT64_MAX, 2**62)),
        (count_range, (INT64_MAX, INT64_MIN, -(2**62))),
        (count_range, (INT64_MIN, INT64_MAX, 1)),
        (count_range, (10, -10, -3)),
        (count_range, (0, 10, 0)),
        (count_range, (INT64_MAX, INT64_MIN, INT64_MIN)),
        (last_of_range, (INT64_MIN, INT64_MAX, 2**62)),
        (last_of_range, (INT64_MAX, INT64_MAX - 10, -3)),
        (range_len, (-1, INT64_MAX)),
        (range_len, (INT64_MIN, 0)),
        (range_len, (-5, 5)),
    ],
)
def test_range_counts_exactly_at_the_int64_edges(
    fn: Callable[..., Any], args: tuple[Any, ...], engine: cytask.Engine
) -> None:
    ct = check(fn, args, engine)
    assert ct.native is not None, ct.fallback_reason


def test_range_as_a_value_is_refused_with_its_line() -> None:
    ct = compile_task(range_value)
    assert ct.backend != "numba"
    assert "range() as a value" in (ct.fallback_reason or "")


def range_value(n: int) -> int:
    r = range(n)
    return len(r)


# -- 2. locals that may be unbound ----------------------------------------------------


def found_after_break(n: int, limit: int) -> int:
    for i in range(n):
        if i * i > limit:
            found = i
            break
    return found


def loop_var_after_loop(n: int) -> int:
    for i in range(n):  # noqa: B007  (read after the loop, where it may be unbound)
        pass
    return i


def maybe_scale(a: float, flag: bool) -> float:
    if flag:
        scale = 2.0
    return a * scale


def maybe_augmented(n: int) -> int:
    while n > 0:
        total = 0
        n -= 1
    total += 1
    return total


@pytest.mark.parametrize(
    ("fn", "args"),
    [
        (found_after_break, (5, 3)),
        (found_after_break, (5, 100)),
        (loop_var_after_loop, (0,)),
        (loop_var_after_loop, (3,)),
        (maybe_scale, (1.5, True)),
        (maybe_scale, (1.5, False)),
        (maybe_augmented, (0,)),
        (maybe_augmented, (2,)),
    ],
)
def test_unbound_locals_raise_like_python(
    fn: Callable[..., Any], args: tuple[Any, ...], engine: cytask.Engine
) -> None:
    ct = check(fn, args, engine)
    assert ct.native is not None, ct.fallback_reason


# -- 3. int -> float widening inside tuples --------------------------------------------


def tuple_widening(x: int, flag: bool) -> int:
    entry = (x, 0.5)
    if flag:
        entry = (0.0, 1.0)
    return int(entry[0])


def tuple_result(flag: bool):  # type: ignore[no-untyped-def]
    if flag:
        return (1, 2.5)
    return (3.5, 4.5)


@pytest.mark.parametrize(
    ("fn", "args"), [(tuple_widening, (2**53 + 1, False)), (tuple_result, (True,))]
)
def test_widening_inside_tuples_falls_back(
    fn: Callable[..., Any], args: tuple[Any, ...], engine: cytask.Engine
) -> None:
    ct = check(fn, args, engine)
    assert ct.backend != "numba"
    assert "int on one path and a float" in (ct.fallback_reason or "")


# -- 4. frozen constants compare by bit pattern ------------------------------------------


def signed(x: float) -> float:
    return math.copysign(x, DIRECTION)


def below_nan(x: float) -> bool:
    return x < NAN_LIMIT


def test_a_constant_rebound_from_zero_to_minus_zero_is_noticed(engine: cytask.Engine) -> None:
    global DIRECTION
    ct = check(signed, (3.0,), engine)
    assert ct.native is not None
    DIRECTION = -0.0
    try:
        check(signed, (3.0,), engine)
        assert ct.plan((3.0,), {}) is None  # runs in Python now
    finally:
        DIRECTION = 0.0


def nan_signed(x: float) -> float:
    return math.copysign(x, NAN_LIMIT)


def test_a_nan_constant_rebound_to_the_other_sign_is_noticed(engine: cytask.Engine) -> None:
    """Found by the fuzzer: NaNs compared as equal whatever their sign bit."""
    global NAN_LIMIT
    ct = check(nan_signed, (2.0,), engine)
    assert ct.native is not None
    NAN_LIMIT = -NAN_LIMIT
    try:
        assert math.copysign(1.0, NAN_LIMIT) == -1.0
        check(nan_signed, (2.0,), engine)
        assert run_compiled(ct, (2.0,), engine) == ("value", -2.0)
    finally:
        NAN_LIMIT = math.nan


def test_a_nan_constant_runs_compiled() -> None:
    ct = compile_task(below_nan)
    assert ct.backend == "numba"
    assert ct.plan((1.0,), {}) is ct.native  # unchanged: not a reason to run Python


# -- 5. NumPy bool arrays ---------------------------------------------------------------


def bool_invert(a):  # type: ignore[no-untyped-def]
    return ~a[0]


def bool_add(a):  # type: ignore[no-untyped-def]
    return a[0] + a[1]


def bool_sub(a):  # type: ignore[no-untyped-def]
    return a[0] - a[1]


def bool_neg(a):  # type: ignore[no-untyped-def]
    return -a[0]


def bool_element(a):  # type: ignore[no-untyped-def]
    return a[1]


@pytest.mark.parametrize("fn", [bool_invert, bool_add, bool_sub, bool_neg, bool_element])
def test_numpy_bool_arrays_keep_numpy_semantics(
    fn: Callable[..., Any], engine: cytask.Engine
) -> None:
    check(fn, (np.array([False, True]),), engine)
    check(fn, (np.array([True, True]),), engine)


# -- 6. float -> int64 stores -------------------------------------------------------------


def store_float(x: float) -> int:
    out = np.zeros(2, np.int64)
    out[0] = x
    return int(out[0])


def store_float_augmented(x: float) -> int:
    out = np.zeros(2, np.int64)
    out[1] += x
    return int(out[1])


def numpy_int64(x: float) -> int:
    return int(np.int64(x) + 1)


@pytest.mark.parametrize("fn", [store_float, store_float_augmented, numpy_int64])
@pytest.mark.parametrize("x", [math.nan, math.inf, -math.inf, 1e30, -2.5, 2.0**63, -(2.0**63)])
def test_float_to_int64_raises_like_numpy(
    fn: Callable[..., Any], x: float, engine: cytask.Engine
) -> None:
    check(fn, (x,), engine)


# -- 7. writes into argument arrays -----------------------------------------------------


def write_through_alias(a: np.ndarray, x: int) -> int:
    b = a
    b[0] += x
    return x * x


def write_through_slice(a: np.ndarray) -> int:
    b = a[1:]
    b[0] = 7
    return 0


def inplace_on_argument(a: np.ndarray, x: float) -> float:
    a += x
    return x


def inplace_on_alias(a: np.ndarray, x: float) -> float:
    b = a
    b *= x
    return x


@pytest.mark.parametrize("fn", [write_through_alias, write_through_slice])
def test_writes_through_an_alias_are_refused(fn: Callable[..., Any]) -> None:
    ct = compile_task(fn)
    assert ct.backend != "numba"
    assert "may share memory with an argument" in (ct.fallback_reason or "")


@pytest.mark.parametrize("fn", [inplace_on_argument, inplace_on_alias])
def test_inplace_operations_on_arrays_change_the_callers_array_once(
    fn: Callable[..., Any],
) -> None:
    ct = compile_task(fn)
    want = np.array([1.0, 2.0])
    fn(want, 2.0)
    got = np.array([1.0, 2.0])
    plan = ct.plan((got, 2.0), {})
    assert callable(plan)
    assert plan(got, 2.0) == 2.0
    assert got.tolist() == want.tolist()  # changed once, like Python
    assert ct.backend == "python"
    assert "augmented assignment" in (ct.fallback_reason or "")


# -- 8. decorators under @task ----------------------------------------------------------


def non_negative(f: Callable[[int], int]) -> Callable[[int], int]:
    @functools.wraps(f)
    def wrapper(x: int) -> int:
        if x < 0:
            raise ValueError(f"expected x >= 0, got {x}")
        return f(x)

    return wrapper


def _checked_isqrt(x: int) -> int:
    if x < 0:
        raise ValueError(f"expected x >= 0, got {x}")
    return _isqrt_impl(x)


def non_negative_flat(f: Callable[[int], int]) -> Callable[[int], int]:
    """A decorator whose wrapper is no closure (functools.wraps sets __wrapped__)."""
    return functools.wraps(f)(_checked_isqrt)


def _isqrt_impl(x: int) -> int:
    r = 0
    while (r + 1) * (r + 1) <= x:
        r += 1
    return r


@non_negative_flat
def isqrt_flat(x: int) -> int:
    r = 0
    while (r + 1) * (r + 1) <= x:
        r += 1
    return r


@non_negative
def isqrt(x: int) -> int:
    r = 0
    while (r + 1) * (r + 1) <= x:
        r += 1
    return r


@pytest.mark.filterwarnings("ignore::cytask.compiler.CompileFallbackWarning")
@pytest.mark.parametrize("fn", [isqrt, isqrt_flat])
def test_a_decorator_under_task_is_kept(fn: Callable[[int], int], engine: cytask.Engine) -> None:
    ct = compile_task(fn)
    assert ct.backend != "numba"  # the wrapper raises: Numba refuses it, whatever it wraps
    assert "raise" in str(ct.reasons) or "closes over f" in str(ct.reasons)
    t = task(engine=engine, compile_to_c=True)(fn)
    engine.warmup()
    ct.wait(120)
    assert check(fn, (-5,), engine).backend != "numba"
    with pytest.raises(ValueError, match="expected x >= 0"):
        t.delay(-5).result(timeout=30)
    assert t.delay(17).result(timeout=30) == 4


# -- 9. globals are read when the task runs ----------------------------------------------


def at_rate(x: int) -> int:
    return x * RATE


def root(x: float) -> float:
    return sqrt(x) + 1.0


from math import sqrt  # noqa: E402  (after root(): the name is a module global)


@pytest.mark.timeout(120)
def test_a_delayed_task_reads_the_global_when_it_runs() -> None:
    global RATE
    with Engine(workers=1) as eng:
        t = task(engine=eng, compile_to_c=True)(at_rate)
        eng.warmup()
        assert t.backend == "numba"
        try:
            h = t.apply_async((5,), countdown=0.3)
            RATE = 3
            assert h.result(timeout=30) == 15
        finally:
            RATE = 2


@pytest.mark.timeout(120)
def test_a_queued_native_task_reads_the_global_when_it_runs(
    make_engine: Callable[..., Engine], hold: Callable[..., Any]
) -> None:
    global RATE
    eng = make_engine(workers=1)
    t = task(engine=eng, compile_to_c=True)(at_rate)
    eng.warmup()
    assert t._compiled is not None and t._compiled.native is not None
    native_calls = []
    submit_native = eng.submit_native
    submit_exact = eng._submit_native_exact

    def spy(*args: object, **kwargs: object) -> object:
        native_calls.append(args[1])
        return submit_native(*args, **kwargs)  # type: ignore[arg-type]

    def spy_exact(*args: object) -> object:
        h = submit_exact(*args)  # type: ignore[arg-type]
        if h is not None:  # None: the arguments or the globals did not fit
            native_calls.append(args[1])
        return h

    eng.submit_native = spy  # type: ignore[method-assign]
    eng._submit_native_exact = spy_exact  # type: ignore[method-assign]  # after the first plan
    assert t.delay(5).result(timeout=30) == 10
    gate = hold(eng)
    try:
        h = t.delay(5)  # the C entry point, queued behind the held worker
        RATE = 3
        gate.set()
        assert h.result(timeout=30) == 15
        assert native_calls == [(5,), (5,)]
        assert t.delay(5).result(timeout=30) == 15  # (runs in Python while RATE is 3)
    finally:
        RATE = 2
    assert t.delay(5).result(timeout=30) == 10
    assert native_calls[-1] == (5,) and len(native_calls) == 3


def at_rate_plus(x: int) -> int:
    return x * RATE + 1


def test_without_the_version_tag_a_task_with_globals_runs_on_the_dispatcher(
    monkeypatch: pytest.MonkeyPatch, engine: cytask.Engine
) -> None:
    """Another Python than CPython 3.11-3.13: no C entry point, still exact."""
    global RATE
    from cytask.compiler import _guard

    monkeypatch.setattr(_guard, "_AVAILABLE", False)
    ct = compile_task(at_rate_plus)
    assert ct.backend == "numba" and ct.native is None
    caller = ct._callable
    assert caller is not None and caller(5) == 11
    RATE = 3
    try:
        assert caller(5) == 16  # checked when it runs
    finally:
        RATE = 2


def test_mock_patch_of_a_from_math_import_is_seen(engine: cytask.Engine) -> None:
    ct = compile_task(root)
    assert ct.backend == "numba"
    with mock.patch(__name__ + ".sqrt", lambda x: 100.0):
        assert run_compiled(ct, (4.0,), engine) == ("value", 101.0)
        caller = ct._callable
        assert caller is not None and caller(4.0) == 101.0
    assert run_compiled(ct, (4.0,), engine) == ("value", 3.0)


def root_of(x: float) -> float:
    return math.sqrt(x) + 1.0


def test_mock_patch_of_a_math_function_itself_is_seen(engine: cytask.Engine) -> None:
    ct = compile_task(root_of)
    assert ct.backend == "numba" and ct.native is not None
    assert run_compiled(ct, (4.0,), engine) == ("value", 3.0)
    with mock.patch("math.sqrt", lambda x: 100.0):
        assert run_compiled(ct, (4.0,), engine) == ("value", 101.0)  # as Python would
        # a call queued before the patch and run after it: the C entry point checks too
        plan = ct.plan((4.0,), {})
        assert plan is None or not isinstance(plan, NativeEntry)
    assert run_compiled(ct, (4.0,), engine) == ("value", 3.0)


def test_a_math_patch_between_submit_and_run_is_seen_by_the_native_code(
    engine: cytask.Engine,
) -> None:
    ct = compile_task(root_of)
    plan = ct.plan((4.0,), {})
    assert isinstance(plan, NativeEntry)  # verified now: then math.sqrt changes
    with mock.patch("math.sqrt", lambda x: 100.0):
        h = engine.submit_native(
            plan.address, (4.0,), plan.arg_kinds, plan.result_kind, fallback=ct.python_fn
        )
        assert h.result(timeout=60) == 101.0  # the entry handed it back to Python


def test_the_fast_submit_path_sees_a_math_patch() -> None:
    eng = cytask.Engine(workers=1)
    try:
        t = cytask.task(engine=eng, compile_to_c="strict")(root_of)
        for _ in range(3):
            assert t.delay(4.0).result(timeout=60) == 3.0  # the fast path is now on
        assert t._compiled._fast is not None
        with mock.patch("math.sqrt", lambda x: 100.0):
            assert t.delay(4.0).result(timeout=60) == 101.0
        assert t.delay(4.0).result(timeout=60) == 3.0
    finally:
        eng.shutdown()


# -- 10. the source is the code that is loaded ------------------------------------------


def test_a_file_edited_after_import_is_not_compiled(tmp_path: Path, engine: cytask.Engine) -> None:
    path = tmp_path / "ct_deploy_mod.py"
    path.write_text("def price(x: int) -> int:\n    return x * 2\n")
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module("ct_deploy_mod")
        path.write_text("def price(x: int) -> int:\n    return x * 3\n")  # a deploy
        ct = compile_task(mod.price)
        assert ct.backend != "numba"
        assert "does not match the code that is loaded" in (ct.fallback_reason or "")
        assert run_compiled(ct, (5,), engine) == ("value", 10)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("ct_deploy_mod", None)


def test_the_unedited_file_compiles(tmp_path: Path) -> None:
    path = tmp_path / "ct_deploy_ok.py"
    path.write_text(
        textwrap.dedent("""\
        import numpy as np

        def price(x: int) -> int:
            out = np.zeros(1, np.int64)
            out[0] = x
            return int(out[0]) * 2
        """)
    )
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module("ct_deploy_ok")
        assert compile_task(mod.price).backend == "numba"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("ct_deploy_ok", None)


# -- 13. result types ---------------------------------------------------------------------


def max_flag(flag: bool, n: int) -> int:
    return max(flag, n)


def min_flag(n: int, flag: bool) -> int:
    return min(n, flag)


def first(a):  # type: ignore[no-untyped-def]
    return a[0]


def scaled_first(a):  # type: ignore[no-untyped-def]
    return a[0] * 2.5


def array_total(a):  # type: ignore[no-untyped-def]
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i]
    return s


def swap_np(a, n: int):  # type: ignore[no-untyped-def]
    x = 1
    y = 2
    for _ in range(n):
        x, y = y, a[0]
    return x


def either(a, flag: bool):  # type: ignore[no-untyped-def]
    return a[0] if flag else 0


def shape_scaled(a, k: int):  # type: ignore[no-untyped-def]
    return a.shape[0] * k  # a Python int, not np.int64


def shape_local(a, k: int):  # type: ignore[no-untyped-def]
    s = a.shape
    return s[-1] + k


def first_of_display(a, k: int):  # type: ignore[no-untyped-def]
    for v in (k, 2):  # an element of a tuple of ints is an int
        return v * 2
    return 0


def last_of_display(a, k: int):  # type: ignore[no-untyped-def]
    out = 0
    for v in [k, 2]:
        out = v
    return out


def first_of_tuple_local(a, k: int):  # type: ignore[no-untyped-def]
    pair = (k, 3)
    for v in pair:
        return v
    return 0


def shape_loop(a, k: int):  # type: ignore[no-untyped-def]
    t = k
    for n in a.shape:
        t = n
    return t


@pytest.mark.parametrize(
    ("fn", "args"),
    [
        (max_flag, (True, 1)),
        (max_flag, (True, 0)),
        (max_flag, (False, 1)),
        (max_flag, (False, 0)),
        (min_flag, (1, True)),
        (min_flag, (2, True)),
        (first, (np.array([2**62]),)),
        (first, (np.array([1.5]),)),
        (scaled_first, (np.array([3]),)),
        (array_total, (np.zeros(0),)),
        (array_total, (np.array([1.0, 2.5]),)),
        (array_total, (np.array([1, 2]),)),
        (swap_np, (np.array([5]), 0)),
        (swap_np, (np.array([5]), 1)),
        (swap_np, (np.array([5]), 2)),
        (shape_scaled, (np.arange(4), 3)),
        (shape_scaled, (np.arange(4.0), 2**62)),  # past int64: Python's int
        (shape_local, (np.arange(4), 3)),
        (shape_loop, (np.arange(4), 3)),
        (first_of_display, (np.arange(4), 5)),
        (last_of_display, (np.arange(4), 5)),
        (first_of_tuple_local, (np.arange(4), 5)),
    ],
)
def test_result_types_are_pythons(
    fn: Callable[..., Any], args: tuple[Any, ...], engine: cytask.Engine
) -> None:
    check(fn, args, engine)


def test_an_array_element_stays_a_numpy_scalar_downstream(engine: cytask.Engine) -> None:
    ct = compile_task(first)
    a = np.array([2**62])
    plan = ct.plan((a,), {})
    assert callable(plan)
    with np.errstate(over="ignore"):
        assert plan(a) * 4 == first(a) * 4 == 0  # int64 wraps, as in Python


def test_a_path_dependent_numpy_scalar_is_refused_with_its_line() -> None:
    ct = compile_task(either)
    assert ct.backend != "numba"
    assert "NumPy scalar" in (ct.fallback_reason or "")


# -- Cython: a local that may be unbound ---------------------------------------------------


def cython_maybe_unbound(a: int, x: float) -> float:
    for _ in range(a):
        if x > 0.0:
            d = float(x) * 2.0
    try:  # not for Numba: Cython builds it
        return d
    except ZeroDivisionError:
        return 0.0


@pytest.mark.timeout(600)
@pytest.mark.parametrize("args", [(0, 1.0), (2, -1.0), (2, 1.5)])
def test_cython_raises_for_an_unbound_local(args: tuple[Any, ...], engine: cytask.Engine) -> None:
    ct = compile_task(cython_maybe_unbound, strict=True)
    assert ct.backend == "cython", ct.fallback_reason
    want = outcome(lambda: cython_maybe_unbound(*args))
    got = run_compiled(ct, args, engine)
    assert same(want, got), f"Python {want!r}, compiled {got!r}"


# -- a loop whose first iteration is compiled on its own (speed), still exact ---------------


def lcg_peeled(n: int, seed: int) -> int:
    x = seed
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        last = i
    return x + last


@pytest.mark.parametrize(
    "args", [(0, 1), (1, 1), (3, 7), (5, 2**62), (4, -(2**63)), (-2, 5), (1, 2**62)]
)
def test_a_peeled_loop_keeps_python_semantics(args: tuple[Any, ...], engine: cytask.Engine) -> None:
    ct = check(lcg_peeled, args, engine)
    assert ct.native is not None
    assert ct.analysis is not None and "__ct_p" in (ct.analysis.numba_source or "")


# -- Cython: min() and max() evaluate their arguments in order (found by the fuzzer) ------


def cython_min_order(x: float) -> float:
    label = "not for Numba"  # a string: Cython builds it
    return min(x % 0.0, math.exp(1e300)) if label else 0.0


@pytest.mark.timeout(600)
def test_cython_min_evaluates_its_arguments_in_order(engine: cytask.Engine) -> None:
    ct = compile_task(cython_min_order, strict=True)
    assert ct.backend == "cython", ct.fallback_reason
    want = outcome(lambda: cython_min_order(1.0))
    assert want == ("raises", ZeroDivisionError)
    assert same(want, run_compiled(ct, (1.0,), engine))
