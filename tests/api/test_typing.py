"""Typing: ``@task`` keeps the signature, so mypy flags a wrong ``delay()`` call."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import cytask

SNIPPET = """
from cytask import Priority, TaskHandle, task


@task
def add(x: int, y: int) -> int:
    return x + y


@task(retries=3, priority=Priority.HIGH)
def greet(name: str, *, loud: bool = False) -> str:
    return name.upper() if loud else name


h: TaskHandle[int] = add.delay(1, 2)
n: int = add(1, 2)
g = greet.delay("ann", loud=True)
{bad}
"""


def _mypy(tmp_path: pathlib.Path, bad: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec("mypy") is None:  # it must run as sys.executable -m mypy
        pytest.skip("mypy is not installed")
    # cytask is installed in editable mode through an import hook mypy cannot follow:
    # point it at the package directory the tests import
    stubs = tmp_path / "path"
    stubs.mkdir()
    (stubs / "cytask").symlink_to(pathlib.Path(cytask.__file__).parent)
    src = tmp_path / "snippet.py"
    src.write_text(SNIPPET.format(bad=textwrap.dedent(bad)))
    env = {**os.environ, "MYPYPATH": str(stubs)}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
         "--cache-dir", str(tmp_path / "cache"), "--no-error-summary", str(src)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=110, check=False,
    )  # fmt: skip


@pytest.mark.timeout(120)
def test_correct_calls_pass(tmp_path: pathlib.Path) -> None:
    proc = _mypy(tmp_path, "")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('add.delay(1, "x")', 'Argument 2 to "delay" of "Task" has incompatible type "str"'),
        ("add.delay(1)", 'Missing positional argument "y" in call to "delay"'),
        ("greet.delay('ann', loud=1.5)", 'Argument "loud" to "delay" of "Task"'),
        ("s: str = add.delay(1, 2).result()", "Incompatible types in assignment"),
        ('add("1", 2)', 'Argument 1 to "__call__" of "Task" has incompatible type "str"'),
    ],
)
def test_wrong_calls_are_flagged(tmp_path: pathlib.Path, bad: str, message: str) -> None:
    proc = _mypy(tmp_path, bad)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "error:" in line]
    assert len(lines) == 1 and message in lines[0], proc.stdout


def test_package_ships_py_typed() -> None:
    assert (pathlib.Path(cytask.__file__).parent / "py.typed").is_file()
