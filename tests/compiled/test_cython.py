"""The Cython backend: built in the background, then used; same answers as Python."""

from __future__ import annotations

import shutil

import pytest

import compiled_corpus as corpus
from cytask.compiler import compile_task

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
