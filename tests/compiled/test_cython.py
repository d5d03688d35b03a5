"""The Cython backend: built in the background, then used; same answers as Python."""

from __future__ import annotations

import inspect
import shutil
import traceback

import pytest

import cache_corpus as cc
import compiled_corpus as corpus
from cytask.compiler import CompiledTask, NativeEntry, compile_task

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler"),
]


def test_string_and_dict_code_builds_with_cython() -> None:
    ct = compile_task(corpus.count_words)
    assert ct.backend in ("python", "cython")
    if ct.backend == "python":  # the build runs in the background meanwhile
        assert ct.state == "building"
        assert ct.plan(("a b a",), {}) is None
        assert ct.fallback_reason is not None and "Cython build in progress" in ct.fallback_reason
    ct.wait(timeout=280)
    assert (ct.backend, ct.state, ct.fallback_reason) == ("cython", "ready", None)
    assert ct.reasons  # why not Numba is still on record
    fn = ct.plan(("a b a",), {})
    assert fn is not None and fn is not corpus.count_words
    assert fn("to be or not to be") == corpus.count_words("to be or not to be")


def test_cython_sees_the_module_globals_it_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    ct = compile_task(corpus.calls_helper).wait(timeout=280)
    assert ct.backend == "cython"
    fn = ct.plan((4,), {})
    assert fn is not None and fn(4) == 10
    monkeypatch.setattr(corpus, "helper", lambda x: x - 1)
    fn = ct.plan((4,), {})
    assert fn is not None and fn(4) == 6  # the rebinding is seen


def test_cython_keeps_python_exceptions() -> None:
    ct = compile_task(corpus.raises).wait(timeout=280)
    assert ct.backend == "cython"
    fn = ct.plan((-1,), {})
    assert fn is not None
    with pytest.raises(ValueError, match="negative"):
        fn(-1)


# -- exactness of the generated module (issue 8, items 11, 12, 16, 17) ------------------


def _cython(fn: object) -> CompiledTask:
    ct = compile_task(fn).wait(timeout=280)  # type: ignore[arg-type]
    assert (ct.backend, ct.fallback_reason) == ("cython", None)
    return ct


def _call(ct: CompiledTask, *args: object, **kwargs: object) -> object:
    fn = ct.plan(args, kwargs)
    assert fn is not None and fn is not ct.python_fn and not isinstance(fn, NativeEntry)
    return fn(*args, **kwargs)


def test_a_default_that_names_a_global_keeps_its_value() -> None:
    kw = _cython(cc.clip)
    assert _call(kw, "abcdef") == cc.clip("abcdef") == "abc"
    assert _call(kw, "abcdef", n=1) == "a"
    capped = _cython(cc.clip_capped)  # used to be None: a declared global's placeholder
    assert _call(capped, "abcdef") == cc.clip_capped("abcdef") == "abc"
    positional = _cython(cc.clip_positional)
    assert _call(positional, "abcdef") == cc.clip_positional("abcdef") == "abc"
    assert _call(positional, "abcdef", 2) == "ab"


def test_a_mutable_default_is_the_one_python_uses() -> None:
    ct = _cython(cc.remember)
    before = len(cc.remember.__defaults__[0])  # type: ignore[index]
    assert _call(ct, "compiled") == before + 1
    assert cc.remember("python") == before + 2  # one list, shared by both


def test_private_names_are_mangled_as_in_the_class() -> None:
    acct = cc.Account(21)
    assert _call(_cython(cc.Account.balance_of), acct) == 21
    report = _cython(cc.Account.report)
    assert _call(report, acct) == cc.Account.report(acct) == {"__key": 42}


def test_mangling_it_cannot_reproduce_is_refused_not_wrong() -> None:
    ct = compile_task(cc.Account.shown).wait(timeout=280)
    assert ct.backend == "python"
    assert ct.fallback_reason is not None and "does not give the names" in ct.fallback_reason
    assert ct.plan((cc.Account(1),), {}) is None


@pytest.mark.parametrize(
    ("name", "args", "want"),
    [
        ("checked", (3,), 3),
        ("asserted", (3,), 3),
        ("via_lambda", (4,), 8),
        ("via_nested", (4,), 14),
        ("scaled", (3,), [0, 2, 4]),
    ],
)
def test_globals_read_only_in_raise_assert_lambda_nested_or_yield(
    name: str, args: tuple[object, ...], want: object
) -> None:
    ct = _cython(getattr(cc, name))
    got = _call(ct, *args)
    assert (list(got) if name == "scaled" else got) == want  # type: ignore[call-overload]


def test_raise_with_a_global_exception_class_and_message() -> None:
    ct = _cython(cc.checked)
    with pytest.raises(cc.Problem, match="negative"):
        _call(ct, -1)
    with pytest.raises(AssertionError, match="negative"):
        _call(_cython(cc.asserted), -1)


def test_a_global_the_module_lacks_raises_name_error_until_defined(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ct = _cython(cc.late)
    with pytest.raises(NameError, match="NOT_YET"):
        _call(ct, 1)
    monkeypatch.setattr(cc, "NOT_YET", 41, raising=False)
    assert _call(ct, 1) == 42
    monkeypatch.delattr(cc, "NOT_YET")
    with pytest.raises(NameError, match="NOT_YET"):
        _call(ct, 1)


def test_tracebacks_point_at_the_users_file_and_line() -> None:
    ct = _cython(cc.checked)
    with pytest.raises(cc.Problem) as info:
        _call(ct, -1)
    last = traceback.extract_tb(info.value.__traceback__)[-1]
    raise_line = inspect.getsourcelines(cc.checked)[1] + 2
    assert (last.filename, last.lineno) == (cc.__file__, raise_line)
    assert "raise Problem(MESSAGE)" in (last.line or "")


@pytest.mark.parametrize("which", range(5))
def test_a_power_of_two_literals_is_pythons(which: int) -> None:
    """Cython computed ``0 ** -1`` and ``10.0 ** 400`` with C's pow(): inf, no exception."""
    ct = _cython(cc.literal_powers)
    try:
        want: object = cc.literal_powers(which)
    except ArithmeticError as exc:
        with pytest.raises(type(exc)):
            _call(ct, which)
    else:
        assert _call(ct, which) == want


def test_a_function_reading_its_modules_dunder_names_is_refused() -> None:
    ct = compile_task(cc.own_module).wait(timeout=280)
    assert ct.backend == "python"  # the generated module's __name__ is not the user's
    assert ct.fallback_reason is not None and "__name__" in ct.fallback_reason
