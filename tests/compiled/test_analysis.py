"""The analysis: every reason names the offending line and says what to change."""

from __future__ import annotations

import inspect

import pytest

import compiled_corpus as corpus
from cytask.compiler import analyze


def line_of(fn: object, needle: str) -> int:
    lines, first = inspect.getsourcelines(fn)  # type: ignore[arg-type]
    for i, text in enumerate(lines):
        if needle in text:
            return first + i
    raise AssertionError(f"{needle!r} not in the source")


@pytest.mark.parametrize("name", sorted(corpus.INELIGIBLE))
def test_ineligible_functions_say_why(name: str) -> None:
    fn, words = corpus.INELIGIBLE[name]
    a = analyze(fn)  # type: ignore[arg-type]
    assert a.reasons, f"{name} should not be eligible for Numba"
    text = " | ".join(r.message for r in a.reasons)
    assert words in text
    assert all(r.line > 0 for r in a.reasons)
    assert a.numba_source is None


@pytest.mark.parametrize(
    ("fn", "needle"),
    [
        (corpus.say, "print(n)"),
        (corpus.bump, "global COUNTER"),
        (corpus.safe_div, "try:"),
        (corpus.calls_helper, "helper(x)"),
        (corpus.count_words, "counts = {}"),
        (corpus.raises, "raise ValueError"),
    ],
)
def test_reasons_carry_the_source_line(fn: object, needle: str) -> None:
    a = analyze(fn)  # type: ignore[arg-type]
    assert line_of(fn, needle) in {r.line for r in a.reasons}


def test_reasons_are_not_repeated() -> None:
    a = analyze(corpus.fib)
    assert len(a.reasons) == len(set(a.reasons))


@pytest.mark.parametrize(
    "name",
    ["int_loop", "float_math", "checked_math", "collatz", "pi_lcg", "uses_const", "poly"],
)
def test_numeric_functions_are_eligible(name: str) -> None:
    a = analyze(getattr(corpus, name))
    assert a.reasons == []
    assert a.numba_source is not None


def test_hints_give_the_native_signature() -> None:
    a = analyze(corpus.mixed)
    assert (a.arg_kinds, a.result_kind, a.native_signature) == ("id", "d", True)
    assert analyze(corpus.is_prime).result_kind == "b"
    assert not analyze(corpus.poly).native_signature
    assert analyze(corpus.array_sum).arg_kinds == "A"


def test_global_constants_are_frozen_and_modules_imported() -> None:
    a = analyze(corpus.uses_const)
    assert a.constants == {"SCALE": 3}
    assert analyze(corpus.checked_math).imports == {
        "math": "import math as math",
        "sqrt": "from math import sqrt as sqrt",
    }


def test_closures_are_rejected_for_both_backends() -> None:
    a = analyze(corpus.adder)
    assert [r.message for r in a.cython_reasons] == [a.reasons[0].message]


def test_builtins_are_not_python_functions() -> None:
    a = analyze(len)  # type: ignore[arg-type]
    assert "not a plain Python function" in a.reasons[0].message


def test_rewrite_checks_every_int_operation() -> None:
    src = analyze(corpus.int_div_mod).numba_source
    assert src is not None
    for helper in ("ct_floordiv", "ct_mod", "ct_mul", "ct_add"):
        assert helper in src
