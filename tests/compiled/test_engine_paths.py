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

        def spy(*args: object, **kwargs: object) -> object:
            native_calls.append(args[1])
            return submit_native(*args, **kwargs)  # type: ignore[arg-type]

        eng.submit_native = spy  # type: ignore[method-assign]
        assert square.delay(12).result(timeout=30) == 144
        assert square.delay(2**40).result(timeout=30) == 2**80  # overflow: exact via Python
        assert native_calls == [(12,), (2**40,)]
