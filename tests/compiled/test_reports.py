"""Honest reports: what a task says about how it runs is how it runs (issue 8, item 16)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

import cache_corpus as cc
import compiled_corpus as corpus
import cytask
from cytask.compiler import (
    CompiledTask,
    CompileError,
    CompileFallbackWarning,
    NativeEntry,
    compile_task,
)


@pytest.fixture
def eng() -> Iterator[cytask.Engine]:
    with cytask.Engine(workers=1) as e:
        yield e


def test_backend_and_stats_are_current_once_the_background_compile_finishes(
    eng: cytask.Engine,
) -> None:
    t = cytask.task(compile_to_c=True, engine=eng)(cc.tri)
    before = eng.stats().compiled_numba
    assert t.delay(4).result(timeout=60) == 6  # the first call runs in Python
    t._compile_future.result(timeout=240)
    # no second submission: the finished compile is already the task's
    assert (t.backend, t.fallback_reason) == ("numba", None)
    assert eng.stats().compiled_numba >= before + 1


def test_fallback_reason_is_current_once_the_background_compile_finishes(
    eng: cytask.Engine,
) -> None:
    t = cytask.task(compile_to_c=True, engine=eng)(corpus.bump)
    t.delay(0).result(timeout=60)
    t._compile_future.result(timeout=240)
    # no second submission (which would also warn)
    assert t.backend == "python"
    assert t.fallback_reason is not None and "writes the global COUNTER" in t.fallback_reason
    with pytest.warns(CompileFallbackWarning, match="writes the global COUNTER"):
        t.delay(0).result(timeout=60)


def test_a_task_still_building_is_not_counted_as_a_fallback() -> None:
    from cytask import _compile

    t = cytask.task(compile_to_c=True)(cc.count_chars)
    ct = CompiledTask(cc.count_chars)  # backend "python" while Cython builds
    ct.state = "building"
    t._compiled = ct
    building = _compile.compile_stats()
    ct.state = "failed"
    failed = _compile.compile_stats()
    assert failed["compile_fallbacks"] == building["compile_fallbacks"] + 1


def test_a_nan_constant_keeps_the_native_path() -> None:
    ct = compile_task(cc.or_missing)
    assert ct.backend == "numba" and isinstance(ct.native, NativeEntry)
    # NaN != NaN: compared with ==, the constant looked rebound on every call
    assert ct.plan((1.5,), {}) is ct.native


def test_a_constant_rebound_to_minus_zero_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    ct = compile_task(cc.toward)
    assert ct.plan((2.0,), {}) is ct.native
    monkeypatch.setattr(cc, "DIRECTION", -0.0)  # == 0.0, but another sign
    assert ct.plan((2.0,), {}) is None  # this call runs in Python: -2.0
    assert cc.toward(2.0) == -2.0


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_a_numba_failure_stays_visible_when_cython_succeeds() -> None:
    ct = compile_task(cc.pick).wait(timeout=280)
    assert (ct.backend, ct.fallback_reason) == ("cython", None)
    assert ct.numba_error is not None and "TypingError" in str(ct.numba_error)
    assert any("TypingError" in r.message for r in ct.reasons)  # with its line
    fn = ct.plan((1,), {})
    assert fn is not None and fn(1) == 2.5


def test_disable_env_makes_strict_tasks_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CYTASK_DISABLE_COMPILE", "1")
    with pytest.raises(CompileError, match="CYTASK_DISABLE_COMPILE"):
        cytask.task(compile_to_c="strict")(corpus.add)
    t = cytask.task(compile_to_c=True)(corpus.add)  # not strict: runs as Python
    assert t(1, 2) == 3
