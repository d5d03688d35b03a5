"""The pipeline: backends in order, visible fallback, strict mode, the switch-off."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import Future

import pytest

import compiled_corpus as corpus
import cytask.compiler
from cytask.compiler import (
    CompiledTask,
    CompileError,
    CompileFallbackWarning,
    CythonCompileError,
    NativeEntry,
    compile_task,
    compile_task_async,
    warn_fallback,
)


def test_public_surface() -> None:
    assert set(cytask.compiler.__all__) == {
        "Analysis",
        "CompileCacheWarning",
        "CompileError",
        "CompileFallbackWarning",
        "CompiledTask",
        "CythonCompileError",
        "IneligibleError",
        "NativeEntry",
        "NumbaCompileError",
        "Reason",
        "analyze",
        "compile_disabled",
        "compile_task",
        "compile_task_async",
        "warn_cache",
        "warn_fallback",
    }
    for name in cytask.compiler.__all__:
        assert getattr(cytask.compiler, name) is not None
    assert issubclass(CompileError, cytask.CytaskError)
    assert issubclass(CompileFallbackWarning, Warning)


def test_import_cytask_does_not_import_numba() -> None:
    code = "import sys, cytask, cytask.compiler; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_hinted_numeric_function_gets_a_native_entry() -> None:
    ct = compile_task(corpus.int_div_mod)
    assert (ct.backend, ct.fallback_reason, ct.reasons) == ("numba", None, [])
    assert isinstance(ct.native, NativeEntry)
    assert (ct.native.arg_kinds, ct.native.result_kind) == (b"ii", b"i")
    assert ct.native.address != 0
    assert ct.compile_ms > 0


def test_plan_falls_back_per_call_for_arguments_that_do_not_fit() -> None:
    ct = compile_task(corpus.mixed)
    assert ct.plan((3, 2.5), {}) is ct.native
    assert ct.plan((2**63, 2.5), {}) is None  # past int64
    assert ct.plan((3, 2), {}) is None  # an int where the hint says float
    assert ct.plan((True, 2.5), {}) is None  # a bool is not an int here
    assert ct.plan(("3", 2.5), {}) is None
    assert ct.plan((3,), {}) is None
    assert ct.plan((3,), {"b": 2.5}) is None


def test_unhinted_function_plans_the_dispatcher() -> None:
    ct = compile_task(corpus.poly)
    assert (ct.backend, ct.native) == ("numba", None)
    call = ct.plan((7, 2), {})
    assert callable(call)
    assert call(7, 2) == corpus.poly(7, 2)
    assert ct.plan((7, 2**64), {}) is None


def test_wrong_result_hint_uses_the_dispatcher_and_says_so() -> None:
    ct = compile_task(corpus.returns_float_hinted_int)
    assert (ct.backend, ct.native) == ("numba", None)
    assert "hint says -> int" in ct.reasons[0].message
    call = ct.plan((7,), {})
    assert callable(call) and call(7) == 3.5


def test_rebinding_a_frozen_constant_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    ct = compile_task(corpus.uses_const)
    assert ct.plan((2,), {}) is ct.native
    monkeypatch.setattr(corpus, "SCALE", 4)
    assert ct.plan((2,), {}) is None


def test_disable_env_turns_the_stage_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CYTASK_DISABLE_COMPILE", "1")
    ct = compile_task(corpus.add)
    assert ct.backend == "python"
    assert ct.fallback_reason is not None and "CYTASK_DISABLE_COMPILE" in ct.fallback_reason
    assert ct.plan((1, 2), {}) is None
    # strict means "compiled or an error", also when compiling is switched off
    with pytest.raises(CompileError, match="CYTASK_DISABLE_COMPILE"):
        compile_task(corpus.add, strict=True)


def test_ineligible_for_both_backends_falls_back_with_reasons() -> None:
    ct = compile_task(corpus.bump)
    assert (ct.backend, ct.state) == ("python", "ready")
    assert ct.fallback_reason is not None and "writes the global COUNTER" in ct.fallback_reason
    assert ct.reasons and ct.reasons[0].line > 0
    assert ct.plan((1,), {}) is None


def test_strict_mode_raises_a_compile_error() -> None:
    with pytest.raises(CythonCompileError) as info:
        compile_task(corpus.adder, strict=True)
    assert isinstance(info.value, CompileError)
    assert "closes over k" in str(info.value)
    assert info.value.reasons


def test_warn_fallback_warns_once() -> None:
    ct = compile_task(corpus.bump)
    with pytest.warns(CompileFallbackWarning, match="writes the global"):
        warn_fallback(ct)
    warn_fallback(ct)  # a second call is silent (warnings are errors here)


def test_no_warning_for_compiled_tasks() -> None:
    warn_fallback(compile_task(corpus.add))


def test_compile_task_async_returns_a_future() -> None:
    fut = compile_task_async(corpus.is_prime)
    assert isinstance(fut, Future)
    ct = fut.result(timeout=60)
    assert isinstance(ct, CompiledTask) and ct.backend == "numba"


def test_numba_cache_is_reused_by_a_second_process(cache_dir: str) -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        import compiled_corpus
        from cytask.compiler import compile_task
        ct = compile_task(compiled_corpus.collatz)
        print(ct.backend, ct.native.keepalive.cfunc.cache_hits)
        """
    )
    here = os.path.dirname(__file__)
    env = {**os.environ, "CYTASK_CACHE_DIR": cache_dir}
    runs = [
        subprocess.run(
            [sys.executable, "-c", code, here], capture_output=True, text=True, env=env, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    assert runs[0][0] == runs[1][0] == "numba"
    assert int(runs[1][1]) >= 1


def test_int_widened_to_float_is_refused_with_its_line() -> None:
    ct = compile_task(corpus.widened)
    ct.wait(timeout=120)
    assert ct.native is None
    numba_error = ct.errors[0]
    assert "total" in str(numba_error)
    _, first = __import__("inspect").getsourcelines(corpus.widened)
    assert numba_error.reasons[0].line == first + 1  # "total = 0"
