"""``cytask check`` / ``cytask compile``: table, JSON, --verify and exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cytask._cli import main

HERE = Path(__file__).parent


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plain_function_by_module_and_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "compiled_corpus:int_loop")
    assert code == 0
    assert "int_loop" in out and "numba" in out and "native, no GIL" in out
    assert "compiled_corpus.py:" in out


def test_json_output_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", str(HERE / "cli_tasks.py"), "--json")
    assert code == 1  # bump falls back
    rows = {row["name"]: row for row in json.loads(out)}
    assert set(rows) == {"hypot2", "ratio", "bump", "label"}
    for row in rows.values():
        assert {"name", "file", "line", "backend", "reasons", "compile_ms"} <= set(row)
        assert isinstance(row["line"], int) and isinstance(row["compile_ms"], float)
        assert row["file"].endswith("cli_tasks.py")
    assert rows["hypot2"]["backend"] == "numba" and rows["hypot2"]["reasons"] == []
    assert rows["bump"]["backend"] == "python"
    reason = rows["bump"]["reasons"][0]
    assert isinstance(reason["line"], int) and "COUNTER" in reason["message"]
    assert rows["label"]["requested"] is False


def test_table_reports_fallback_with_reason_lines(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", str(HERE / "cli_tasks.py"))
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["task", "file:line", "backend", "compile", "ms", "status"]
    assert any("bump" in ln and "FALLBACK" in ln for ln in lines)
    assert any(ln.strip().startswith("line ") and "COUNTER" in ln for ln in lines)
    assert any("label" in ln and "not requested" in ln for ln in lines)


def test_module_whose_tasks_all_compile_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "cli_ok", "--verify")
    assert code == 0
    # (2**40,) and (-(2**62),) overflow int64: the native code hands them back to
    # Python, so they compare Python with itself and are not counted as verified
    assert "verified 1 example(s)" in out
    assert "2 example(s) ran as Python on both sides (not compared)" in out


def test_verify_runs_examples_through_the_native_path(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "cli_tasks:hypot2", "--verify", "--json")
    assert code == 0
    (row,) = json.loads(out)
    # (2**40, 2**40) overflows int64 and runs in Python on both sides: not verified
    assert (row["verified"], row["in_python"], row["differences"]) == (2, 1, [])


def test_verify_reports_a_difference(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cytask.compiler import CompiledTask

    monkeypatch.setattr(CompiledTask, "plan", lambda self, args, kwargs: lambda *a: 42)
    code, out, _ = run(capsys, "check", "cli_tasks:ratio", "--verify")
    assert code == 1
    assert "DIFFERS" in out and "DIFFERENCE" in out


def test_compile_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "compile", "cli_ok")
    assert code == 0
    assert out.startswith("square: numba")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "no_such_file.py"], "no such file"),
        (["check", "no_such_module_xyz"], "importing no_such_module_xyz failed"),
        (["check", "compiled_corpus:nope"], "has no attribute 'nope'"),
        (["check", "compiled_corpus:SCALE"], "not a task or a function"),
        (["check", "compiled_corpus"], "no cytask tasks"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err


def test_import_error_names_the_cause(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "broken_tasks.py"
    bad.write_text("raise RuntimeError('no database')\n")
    code, _, err = run(capsys, "check", str(bad))
    assert code == 2
    assert "RuntimeError: no database" in err


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["check"]) == 2
    capsys.readouterr()


def test_python_dash_m_cytask(cache_dir: str) -> None:
    env = {**os.environ, "CYTASK_CACHE_DIR": cache_dir}
    proc = subprocess.run(
        [sys.executable, "-m", "cytask", "check", "cli_tasks:hypot2"],
        cwd=HERE,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "hypot2" in proc.stdout


# -- issue 8, item 17 -----------------------------------------------------------------------


def test_an_internal_error_has_its_own_exit_code(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import cytask._cli

    def broken(target: object) -> None:
        raise RuntimeError("a bug in cytask")

    monkeypatch.setattr(cytask._cli, "_compile", broken)
    code, _, err = run(capsys, "check", "cli_tasks:hypot2")
    assert code == 3 and code not in (0, 1, 2)
    assert "internal error" in err and "RuntimeError: a bug in cytask" in err


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["check", "--help"]):
        code, out, _ = run(capsys, *argv)
        assert code == 0
        assert "exit codes" in out
        codes = ((0, "compiles as requested"), (1, "falls back"), (2, "usage"), (3, "internal"))
        for n, words in codes:
            assert any(ln.strip().startswith(f"{n} ") and words in ln for ln in out.splitlines())


def test_a_strict_task_that_cannot_compile_is_reported_not_an_import_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    src = tmp_path / "strict_tasks.py"
    src.write_text(
        "from cytask import task\n"
        "TOTAL = 0\n\n"
        "@task(compile_to_c='strict')\n"
        "def add_total(n: int) -> int:\n"
        "    global TOTAL\n"
        "    TOTAL += n\n"
        "    return TOTAL\n\n"
        "@task(compile_to_c=True)\n"
        "def double(n: int) -> int:\n"
        "    return 2 * n\n"
    )
    code, out, err = run(capsys, "check", str(src), "--json")
    assert code == 1, err  # does not compile as requested; not 2, "importing failed"
    rows = {row["name"]: row for row in json.loads(out)}
    assert set(rows) == {"add_total", "double"}  # the module imported entirely
    assert rows["add_total"]["strict"] is True
    assert rows["add_total"]["status"] == "STRICT: NOT COMPILED"
    assert "writes the global TOTAL" in rows["add_total"]["fallback_reason"]
    assert rows["double"]["backend"] == "numba"


def test_a_file_named_like_a_standard_module(cache_dir: str, tmp_path: Path) -> None:
    (tmp_path / "random.py").write_text(
        "from cytask import task\n\n"
        "@task(compile_to_c=True)\n"
        "def roll(n: int) -> int:\n"
        "    return n * 6\n"
    )
    code = (
        "import sys, random; from cytask._cli import main; rc = main(sys.argv[1:]); "
        "assert sys.modules['random'] is random and hasattr(random, 'Random'); sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "check", str(tmp_path / "random.py")],
        cwd=HERE,
        capture_output=True,
        text=True,
        env={**os.environ, "CYTASK_CACHE_DIR": cache_dir},
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "roll" in proc.stdout and "native, no GIL" in proc.stdout


def test_file_colon_function(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check", f"{HERE / 'cli_tasks.py'}:hypot2", "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert (row["name"], row["backend"]) == ("hypot2", "numba")
    code, _, err = run(capsys, "check", f"{HERE / 'cli_tasks.py'}:nope")
    assert code == 2 and "has no attribute 'nope'" in err


def test_check_does_not_compile_tasks_that_did_not_ask(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import cytask.compiler

    compiled: list[str] = []
    real = cytask.compiler.compile_task

    def recording(fn: Any, **kwargs: Any) -> Any:
        compiled.append(fn.__name__)
        return real(fn, **kwargs)

    monkeypatch.setattr(cytask.compiler, "compile_task", recording)
    code, out, _ = run(capsys, "check", str(HERE / "cli_tasks.py"), "--json")
    assert code == 1
    assert sorted(compiled) == ["_bump", "_hypot2", "_ratio"]  # not _label
    label = next(row for row in json.loads(out) if row["name"] == "label")
    assert (label["backend"], label["status"], label["requested"]) == (
        "python",
        "not requested",
        False,
    )
    assert label["file"].endswith("cli_tasks.py") and label["line"] > 0


def test_verify_does_not_count_examples_python_ran_on_both_sides(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # cli_tasks.ratio's (1.0, 0.0) divides by zero: the native code hands it back
    code, out, _ = run(capsys, "check", "cli_tasks:ratio", "--verify", "--json")
    assert code == 0
    (row,) = json.loads(out)
    assert (row["verified"], row["in_python"], row["differences"]) == (2, 1, [])


def test_a_numba_failure_is_shown_when_cython_compiled_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    if shutil.which("cc") is None:
        pytest.skip("needs a C compiler")
    code, out, _ = run(capsys, "check", "cache_corpus:pick")
    assert code == 0
    assert "compiled" in out and "why not numba: Numba could not compile pick" in out
    assert "TypingError" in out


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_verify_through_the_dispatcher_and_cython(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "cli_verify", "--verify", "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert (rows["scale"]["backend"], rows["scale"]["native"]) == ("numba", False)
    assert (rows["scale"]["verified"], rows["scale"]["in_python"]) == (1, 1)
    assert rows["tally"]["backend"] == "cython"
    assert (rows["tally"]["verified"], rows["tally"]["in_python"]) == (2, 0)
