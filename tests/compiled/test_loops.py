"""Range loops tested for the flag once per block, and counters left unchecked: still exact.

Two speed-ups bring a compiled loop to hand-written ``njit`` code (issue 8's speed
goal): the flag ("run this call in Python") is tested once per ``BLOCK`` iterations,
so the inner loop has one exit and LLVM unrolls it; and ``n += 1`` on a counter that
provably cannot overflow compiles to a plain add.  Each test here pins a way either
could give another answer than Python, or fail to stop.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import check as check_any_path

import compiled_corpus as cc
import cytask
from cytask.compiler import CompiledTask, compile_task
from cytask.compiler._analysis import BLOCK, SHORT_LOOP
from cytask.compiler._asm import innermost_loops, uncached_dispatcher

INT64_MAX = 2**63 - 1
PLAIN_INCREMENT = "= ct_inplace({name}, __ct_err) + 1"
PER_ITERATION_TEST = "if ct_flag(__ct_err) != 0:\n"


def check(fn: Callable[..., Any], args: tuple[Any, ...], engine: cytask.Engine) -> CompiledTask:
    ct = check_any_path(fn, args, engine)
    assert ct.native is not None, ct.fallback_reason
    return ct


def source(fn: Callable[..., Any]) -> str:
    ct = compile_task(fn)
    assert ct.analysis is not None and ct.analysis.numba_source is not None, ct.fallback_reason
    return ct.analysis.numba_source


# -- blocks --------------------------------------------------------------------------------


def add_steps(n: int, step: int) -> int:
    acc = 0
    for _ in range(n):
        acc += step
    return acc


@pytest.mark.parametrize(
    "args",
    [
        (0, 1),
        (1, 5),
        (BLOCK, 3),
        (BLOCK + 1, 3),
        (3 * BLOCK + 17, -7),
        (1000, 2**53),  # overflows in the fourth block (iteration 1024 would be past)
        (1000, 2**54),  # overflows in the third block: Python's big int
        (-5, 1),
    ],
)
def test_a_blocked_loop_gives_pythons_answer(args: tuple[int, int], engine: cytask.Engine) -> None:
    check(add_steps, args, engine)
    src = source(add_steps)
    assert "while __ct_s" in src and PER_ITERATION_TEST not in src


def stepped(lo: int, hi: int, step: int) -> int:
    total = 0
    for i in range(lo, hi, step):
        if i % 3 == 0:
            continue
        total += i
    return total


@pytest.mark.parametrize(
    "args",
    [
        (0, 2000, 1),
        (2000, -2000, -3),
        (-(2**63), INT64_MAX, 2**62),
        (INT64_MAX - 600, INT64_MAX, 1),  # the sum overflows
        (0, 10, 0),  # ValueError
    ],
)
def test_a_blocked_range_with_bounds_and_continue(
    args: tuple[int, int, int], engine: cytask.Engine
) -> None:
    check(stepped, args, engine)
    assert "while __ct_s" in source(stepped)


def first_over(n: int, x: int) -> int:
    for i in range(n):
        x = x * 2
        if x > 5000000000000000000:
            return i
    return -1


def test_a_flag_raised_in_a_block_ends_the_loop() -> None:
    """x overflows at iteration 62 of 2**62: without the per-block test the loop never ends.

    Python returns 62 there.  Compiled, x wraps to -2**63 and then stays 0, so the
    ``return`` is never reached: the loop must stop at the end of that block and hand
    the call back.  In a subprocess: a loop that does not stop would spin a worker
    thread for good.
    """
    code = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        from test_loops import first_over
        from cytask import Engine
        from cytask.compiler import NativeEntry, compile_task

        ct = compile_task(first_over)
        plan = ct.plan((2**62, 1), {})
        assert isinstance(plan, NativeEntry), ct.fallback_reason
        with Engine(workers=1) as eng:
            h = eng.submit_native(
                plan.address, (2**62, 1), plan.arg_kinds, plan.result_kind, fallback=first_over
            )
            print(h.result(timeout=20))
        """
    )
    folder = str(Path(__file__).parent)
    done = subprocess.run(
        [sys.executable, "-c", code, folder], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(first_over(2**62, 1))] == ["62"]


def with_break(n: int, limit: int) -> int:
    total = 0
    for i in range(n):
        if total > limit:
            break
        total += i
    return total


def test_a_loop_with_its_own_break_keeps_the_per_iteration_test(engine: cytask.Engine) -> None:
    for args in [(10_000, 500), (10_000, INT64_MAX - 1)]:
        check(with_break, args, engine)
    src = source(with_break)
    assert "while __ct_s" not in src and PER_ITERATION_TEST in src


def nested_break(n: int) -> int:
    hits = 0
    for i in range(n):
        for j in range(n):
            if j > i:
                break  # the inner loop's own: the outer loop is still blocked
            hits += j
    return hits


def test_a_break_of_an_inner_loop_does_not_stop_blocking(engine: cytask.Engine) -> None:
    for n in (0, 3, 300):
        check(nested_break, (n,), engine)
    src = source(nested_break)
    assert src.count("while __ct_s") == 1 and PER_ITERATION_TEST in src


def inner_steps(n: int, k: int, step: int) -> int:
    acc = 0
    for _ in range(n):
        for _ in range(k):
            acc += step
    return acc


@pytest.mark.parametrize("k", [0, 1, 2, SHORT_LOOP, SHORT_LOOP + 1, BLOCK + 3])
@pytest.mark.parametrize("step", [3, 2**60])
def test_a_short_inner_loop_tests_the_flag_at_each_iteration(
    k: int, step: int, engine: cytask.Engine
) -> None:
    """An inner loop entered with at most SHORT_LOOP iterations to go skips the blocks'
    set-up (it cost a 2-iteration inner loop 10%) and tests the flag each time; longer
    ones are blocked.  Exact either way, with the overflow (2**60 * 8 past int64) in
    the middle of an inner loop, of a block, or of neither."""
    src = source(inner_steps)
    assert f" <= {SHORT_LOOP}:\n" in src and PER_ITERATION_TEST in src
    assert src.count("while __ct_s") == 2  # the outer loop's blocks, the inner loop's
    check(inner_steps, (5, k, step), engine)
    check(inner_steps, (300, k, step), engine)


def break_in_inner_for_else(n: int) -> int:
    total = 0
    for i in range(n):
        for j in range(2):
            total += j
        else:
            if i == 3:
                break  # runs after the inner loop: it ends the outer one
        total += 100
    return total


def break_in_inner_while_else(n: int) -> int:
    total = 0
    for i in range(n):
        k = 0
        while k < 2:
            k += 1
        else:
            if i == 3:
                break
        total += 100
    return total


@pytest.mark.parametrize("fn", [break_in_inner_for_else, break_in_inner_while_else])
def test_a_break_in_an_inner_loops_else_ends_the_outer_loop(
    fn: Callable[[int], int], engine: cytask.Engine
) -> None:
    """Blocked, that break ended only the block: the next block ran on (300: 4748, not 304)."""
    for n in (0, 3, 10, BLOCK + 44):
        check(fn, (n,), engine)
    assert "while __ct_s" not in source(fn)


# -- range() arguments ---------------------------------------------------------------------


def count_to_element(a: np.ndarray) -> int:
    acc = 0
    for i in range(a[0]):
        acc += i
    return acc


def count_to_element_break(a: np.ndarray) -> int:
    acc = 0
    for _i in range(a[0]):
        acc += 1
        if acc > 10:
            break
    return acc


def count_between(a: np.ndarray) -> int:
    acc = 0
    for i in range(0, a[0]):
        acc += i
    return acc


def length_to_element(a: np.ndarray) -> int:
    return len(range(a[0]))


RANGE_OF_ELEMENT = [count_to_element, count_to_element_break, count_between, length_to_element]


@pytest.mark.parametrize("fn", RANGE_OF_ELEMENT)
def test_range_of_a_numpy_bool_raises_as_in_python(
    fn: Callable[[Any], int], engine: cytask.Engine
) -> None:
    """``range(np.True_)`` raises TypeError (no ``__index__``); Numba counted to 1."""
    ct = check_any_path(fn, (np.array([True, False]),), engine)
    assert ct.backend == "numba", ct.fallback_reason  # the flag, not a failed compile
    check_any_path(fn, (np.array([300], np.int64),), engine)  # np.int64 is an index


@pytest.mark.parametrize("fn", RANGE_OF_ELEMENT)
def test_range_of_a_float_element_raises_as_in_python(
    fn: Callable[[Any], int], engine: cytask.Engine
) -> None:
    """Numba counts to 3 for ``range(3.0)``; Python raises TypeError."""
    ct = check_any_path(fn, (np.array([3.0]),), engine)
    assert "range() of a float" in (ct.fallback_reason or ""), ct.fallback_reason


def count_to_float(x: float) -> int:
    acc = 0
    for _ in range(x):  # type: ignore[call-overload]
        acc += 1
        if acc > 100:
            break
    return acc


def count_to_flag(flag: bool, n: int) -> int:
    acc = 0
    for _ in range(flag):  # a Python bool is an index
        acc += 5
    for i in range(n, flag, -1):
        acc += i
    return acc + len(range(flag))


def test_range_of_a_float_argument_raises_and_of_a_bool_counts(engine: cytask.Engine) -> None:
    """The native path: ``range(x)`` with x a float returned 3 for 3.0."""
    for x in (3.0, -1.0, 2.5):
        check_any_path(count_to_float, (x,), engine)
    for args in [(True, 300), (False, 300), (True, -4), (False, 0)]:
        check(count_to_flag, args, engine)


# -- dummy values do not allocate ------------------------------------------------------------


def allocate_after_overflow(n: int, x: int) -> int:
    total = 0
    for i in range(n):
        y = x * i  # past int64 at i = 2 for x near 2**62: Python returns then
        if y >= 9223372036854775807:
            return i
        block = np.zeros(max(y - x, 0) >> 37)
        total += block.shape[0]
    return total


def allocate_rows_after_overflow(n: int, x: int) -> int:
    total = 0
    for i in range(n):
        y = x * i
        if y >= 9223372036854775807:
            return i
        block = np.ones((max(y - x, 0) >> 38, 2))  # a shape: each dimension is 0
        total += block.size
    return total


def grid(n: int, m: int) -> int:
    cells = np.zeros((n, m))
    return cells.size


def test_a_shape_still_compiles_natively(engine: cytask.Engine) -> None:
    for args in [(3, 4), (-1, 2), (0, 5), (2**40, 2**40)]:
        check(grid, args, engine)


@pytest.mark.parametrize("fn", [allocate_after_overflow, allocate_rows_after_overflow])
def test_a_size_computed_after_an_overflow_allocates_nothing(fn: Callable[..., int]) -> None:
    """Compiled, ``y`` wraps at i = 2 and ``y - x`` then is 2**62 + 2**40: an array of
    2**25 floats (256 MB, filled) at every fourth iteration of the block, where Python
    has already returned 2.  Once the flag is up, a size is 0.  In a subprocess: the
    peak resident memory shows what was allocated."""
    code = textwrap.dedent(
        """
        import resource, sys
        sys.path.insert(0, sys.argv[1])
        from test_loops import {name} as fn
        from cytask import Engine
        from cytask.compiler import NativeEntry, compile_task

        ct = compile_task(fn)
        x = 2**62 + 2**40
        with Engine(workers=1) as eng:
            results = []
            for args in [(2, x), (256, x)]:
                plan = ct.plan(args, {})
                assert isinstance(plan, NativeEntry), ct.fallback_reason
                h = eng.submit_native(plan.address, args, plan.arg_kinds, plan.result_kind,
                                      fallback=fn)
                results.append(h.result(timeout=60))
                if len(results) == 1:
                    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(*results, grew // 1024)
        """
    ).replace("{name}", fn.__name__)
    folder = str(Path(__file__).parent)
    done = subprocess.run(
        [sys.executable, "-c", code, folder], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    first, second, grew_mb = map(int, done.stdout.split())
    assert (first, second) == (fn(2, 2**62 + 2**40), 2)
    assert grew_mb < 128, f"the compiled call allocated {grew_mb} MB on dummy values"
    assert "ct_size(" in source(fn)


# -- counters ------------------------------------------------------------------------------


def count_inside(n: int, seed: int) -> int:
    x = seed
    inside = 0
    for _ in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        if x < 2**30:
            inside += 1
    return inside


def test_a_counter_compiles_to_a_plain_add(engine: cytask.Engine) -> None:
    for args in [(0, 1), (1000, 7), (5000, 2**40)]:
        check(count_inside, args, engine)
    assert PLAIN_INCREMENT.format(name="inside") in source(count_inside)


def count_from(n: int, start: int) -> int:
    c = start  # an argument: unknown
    for _ in range(n):
        c += 1
    return c


def count_near_max(n: int) -> int:
    c = 9223372036854775800  # > 0: the rule needs c0 <= 0
    for _ in range(n):
        c += 1
    return c


def count_twice(n: int) -> int:
    c = 0
    for _ in range(n):
        c += 1
        c += 1
    return c


def count_nested(n: int) -> int:
    c = 0
    for _ in range(n):
        for _ in range(n):
            c += 1  # n * n increments: not bounded by one loop's length
    return c


def count_in_while(n: int) -> int:
    c = 0
    i = 0
    while i < n:
        c += 1
        i += 1
    return c


def count_two_loops(n: int) -> int:
    c = 0
    for _ in range(n):
        c += 1
    for _ in range(n):
        c += 1  # (stores: 3)
    return c


def count_by_two(n: int) -> int:
    c = 0
    for _ in range(n):
        c += 2
    return c


def count_init_in_branch(n: int, flag: bool) -> int:
    c = -1
    if flag:
        c = 0
    for _ in range(n):
        c += 1
    return c


def count_reset_per_row(n: int) -> int:
    total = 0
    for i in range(n):
        row = 0  # in the block of the inner loop: reset before each one
        for _ in range(i):
            row += 1
        total = total + row
    return total


@pytest.mark.parametrize(
    "fn, args",
    [
        (count_from, (10, INT64_MAX - 3)),
        (count_from, (10, 5)),
        (count_near_max, (10,)),
        (count_near_max, (3,)),
        (count_twice, (100,)),
        (count_nested, (30,)),
        (count_in_while, (300,)),
        (count_two_loops, (300,)),
        (count_by_two, (300,)),
        (count_init_in_branch, (300, True)),
    ],
)
def test_what_is_not_provably_a_counter_stays_checked(
    fn: Callable[..., int], args: tuple[Any, ...], engine: cytask.Engine
) -> None:
    check(fn, args, engine)
    assert PLAIN_INCREMENT.format(name="c") not in source(fn)
    assert "ct_add(ct_inplace(c, __ct_err)" in source(fn)


def test_a_counter_reset_in_an_outer_loop_is_plain(engine: cytask.Engine) -> None:
    for n in (0, 1, 50):
        check(count_reset_per_row, (n,), engine)
    assert PLAIN_INCREMENT.format(name="row") in source(count_reset_per_row)


def count_maybe_unbound(n: int, flag: bool) -> int:
    if flag:
        c = 0
    for _ in range(n):
        c += 1
    return c


def test_a_counter_that_may_be_unbound_still_raises(engine: cytask.Engine) -> None:
    for args in [(3, True), (3, False), (0, False)]:
        check(count_maybe_unbound, args, engine)


# -- the machine code: what the speed goal rests on ------------------------------------------


def hot_loop(asm: str) -> tuple[int, int]:
    """(instructions, LCG steps) of the innermost loop with the most LCG steps."""
    loops = [(len(b), sum("$1103515245" in x for x in b)) for b in innermost_loops(asm)]
    return max(loops, key=lambda loop: loop[1], default=(0, 0))


def test_the_lcg_loop_compiles_to_the_instructions_of_hand_written_njit(tmp_path: Path) -> None:
    """No check is left in the loop of the benchmark kernel: the speed goal rests on it.

    Counted in the machine code rather than timed: per LCG step, cytask's loop has no
    more instructions than ``numba.njit(nogil=True)`` of the same function (before the
    blocks and the counter rule: 28 per loop iteration, two steps, against 15.5).
    """
    import numba
    import numpy as np

    ct = compile_task(cc.pi_lcg)
    jit = uncached_dispatcher(ct, tmp_path)  # (code from Numba's cache has no assembly)
    err = np.zeros(2, np.int64)
    assert jit(1000, 7, err.ctypes.data) == cc.pi_lcg(1000, 7) and err[0] == 0
    ours = hot_loop(jit.inspect_asm(jit.signatures[0]))

    hand = numba.njit(nogil=True)(cc.pi_lcg)
    hand(10, 1)
    theirs = hot_loop(hand.inspect_asm(hand.signatures[0]))
    assert ours[1] > 0 and theirs[1] > 0, (ours, theirs)
    assert ours[0] / ours[1] <= theirs[0] / theirs[1], (ours, theirs)


def uses_a_rewrite_name(n: int) -> int:
    total = 0
    for i in range(n):
        for _ in range(2):
            __ct_s3 = i  # the blocked outer loop's own start (a wrong sum before)
            total += __ct_s3
    return total


def test_a_local_named_like_the_rewrites_own_is_refused(engine: cytask.Engine) -> None:
    ct = compile_task(uses_a_rewrite_name)
    assert ct.native is None, "compiled: the loop's own __ct_s3 would be overwritten"
    assert "__ct_s3" in (ct.fallback_reason or "") and "rename it" in (ct.fallback_reason or "")
    check_any_path(uses_a_rewrite_name, (600,), engine)
