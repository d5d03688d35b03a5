"""``cytask check`` / ``cytask compile``: table, JSON, --verify and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
