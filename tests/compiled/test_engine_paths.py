"""Compiled @task functions through the engine: the native path and the caller path."""

from __future__ import annotations

import pytest

from cytask import Engine, task


@pytest.mark.timeout(120)
def test_compiled_task_with_retries_runs_compiled_and_keeps_its_policy() -> None:
    with Engine(workers=2) as eng:

        @task(engine=eng, compile_to_c="strict", retries=2, retry_on=(ZeroDivisionError,))
        def divide(a: int, b: int) -> int:
            return a // b

        assert divide.backend == "numba"
        assert divide.delay(-7, 2).result(timeout=30) == -4  # Python's floor division
        h = divide.delay(1, 0)  # compiled code hands the call back; Python raises
        with pytest.raises(ZeroDivisionError):
            h.result(timeout=30)
        assert h.attempts == 3  # the retry policy applied to the compiled task


@pytest.mark.timeout(120)
def test_compiled_task_without_policy_takes_the_native_path() -> None:
    with Engine(workers=2) as eng:

        @task(engine=eng, compile_to_c="strict")
        def square(a: int) -> int:
            return a * a

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
        eng._submit_native_exact = spy_exact  # type: ignore[method-assign]
        assert square.delay(12).result(timeout=30) == 144
        assert square.delay(2**40).result(timeout=30) == 2**80  # overflow: exact via Python
        # the first call plans; later ones try the C check first (native_calls records both)
        assert native_calls == [(12,), (2**40,)]


_SCALE = 3


def _python_outcome(fn: object, args: tuple[object, ...]) -> tuple[str, object, type]:
    try:
        v = fn(*args)  # type: ignore[operator]
    except Exception as exc:  # the outcome is compared, not handled
        return ("raise", type(exc), type(exc))
    return ("value", v, type(v))


def _task_outcome(h: object) -> tuple[str, object, type]:
    try:
        v = h.result(timeout=30)  # type: ignore[attr-defined]
    except Exception as exc:
        return ("raise", type(exc), type(exc))
    return ("value", v, type(v))


@pytest.mark.timeout(120)
def test_native_submissions_check_arguments_in_c_after_the_first_plan() -> None:
    """After one call planned native, submissions skip plan(): the C check must take
    exactly the arguments plan() takes and hand every other call to Python."""
    with Engine(workers=2) as eng:

        @task(engine=eng, compile_to_c="strict")
        def mix(a: int, x: float, flag: bool) -> float:
            return a * x if flag else x - a

        ct = mix._compiled
        plans = []
        plan = ct.plan

        def counting_plan(args: tuple[object, ...], kwargs: dict[str, object]) -> object:
            plans.append(args)
            return plan(args, kwargs)

        ct.plan = counting_plan
        assert mix.delay(2, 1.5, True).result(timeout=30) == 3.0
        assert mix.delay(3, 0.5, False).result(timeout=30) == -2.5
        assert mix.delay(-(2**63), -0.0, True).result(timeout=30) == 0.0
        assert plans == [(2, 1.5, True)]  # planned once, then checked in C
        odd = [
            (2**63, 1.0, True),  # past int64
            (-(2**63) - 1, 1.0, False),
            (True, 1.0, True),  # a bool is not an int here
            (2.0, 1.0, True),  # a float where the hint says int
            (2, 1, True),  # an int where the hint says float
            (2, 1.0, 1),  # an int where the hint says bool
            (2, 1.0, None),
            ("2", 1.0, True),
            (2, 1.0),  # too few
        ]
        for args in odd:
            expected = _python_outcome(mix.fn, args)
            assert _task_outcome(mix.delay(*args)) == expected, args
        # each call that did not fit went to plan(), which sent it to Python
        assert plans[1:] == odd
        edge = [(2**63 - 1, 1.0, True), (-(2**63), float("nan"), False), (0, float("inf"), True)]
        for args in edge:
            expected = _python_outcome(mix.fn, args)
            got = _task_outcome(mix.delay(*args))
            assert got[0] == expected[0] and got[2] is expected[2], args
            assert got[1] == expected[1] or (got[1] != got[1] and expected[1] != expected[1])
        assert plans[1:] == odd  # these fit: checked in C, never planned


@pytest.mark.timeout(120)
def test_a_rebound_global_is_seen_by_submissions_that_skip_plan() -> None:
    global _SCALE
    with Engine(workers=2) as eng:

        @task(engine=eng, compile_to_c="strict")
        def scaled(x: int) -> int:
            return x * _SCALE

        try:
            assert scaled.delay(2).result(timeout=30) == 6
            assert scaled.delay(2).result(timeout=30) == 6
            _SCALE = 5  # the module's globals changed: plan() verifies them again
            assert scaled.delay(2).result(timeout=30) == 10
            assert scaled.delay(2).result(timeout=30) == 10
            assert scaled.backend == "numba"
        finally:
            _SCALE = 3
