"""The default engine: created lazily for bare ``@task``, replaceable, drained at exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest

import cytask
from cytask import Engine, task


def test_created_lazily_and_reused(fresh_default: None) -> None:
    from cytask import _default

    assert _default._default is None
    eng = cytask.default_engine()
    assert isinstance(eng, Engine)
    assert cytask.default_engine() is eng
    assert eng.name == "cytask-default"


def test_bare_task_uses_the_default_engine(fresh_default: None) -> None:
    @task
    def add(x: int, y: int) -> int:
        return x + y

    h = add.delay(1, 2)
    assert h.result(timeout=30) == 3
    assert cytask.default_engine().get(h.task_id) is h


def test_decoration_does_not_create_an_engine(fresh_default: None) -> None:
    from cytask import _default

    @task
    def f() -> None:
        pass

    f()  # inline calls do not need one either
    assert _default._default is None


def test_set_default_engine(fresh_default: None, make_engine: Callable[..., Engine]) -> None:
    mine = make_engine(workers=1)
    cytask.set_default_engine(mine)
    assert cytask.default_engine() is mine

    @task
    def f() -> str:
        return "on mine"

    h = f.delay()
    assert h.result(timeout=30) == "on mine"
    assert mine.get(h.task_id) is h
    cytask.set_default_engine(None)  # a fresh one on next use
    fresh = cytask.default_engine()
    assert fresh is not mine and not fresh.closed


def test_a_task_bound_to_an_engine_ignores_the_default(
    fresh_default: None, make_engine: Callable[..., Engine]
) -> None:
    mine = make_engine(workers=1)

    @task(engine=mine)
    def f() -> int:
        return 1

    h = f.delay()
    h.result(timeout=30)
    assert mine.get(h.task_id) is h
    from cytask import _default

    assert _default._default is None


def test_a_shut_down_default_is_replaced(fresh_default: None) -> None:
    first = cytask.default_engine()
    first.shutdown()
    second = cytask.default_engine()
    assert second is not first and not second.closed


def test_set_default_engine_rejects_other_objects(fresh_default: None) -> None:
    with pytest.raises(TypeError, match=r"Expected a cytask\.Engine or None for engine, got str"):
        cytask.set_default_engine("engine")  # type: ignore[arg-type]


def _run(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_default_engine_drains_at_interpreter_exit() -> None:
    proc = _run(
        """
        import sys
        import time
        from cytask import task

        @task
        def work(i):
            time.sleep(0.01)
            sys.stdout.write(f"done {i}\\n")  # one write: print() pieces interleave
            sys.stdout.flush()

        for i in range(30):
            work.delay(i)
        delayed = work.apply_async((99,), countdown=60)
        print("submitted", flush=True)
        # the script ends here without waiting for anything
        """
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "submitted"
    assert sorted(lines[1:]) == sorted(f"done {i}" for i in range(30))  # 99 was not yet due
    assert proc.stderr == ""


def test_set_default_engine_drains_at_exit_too() -> None:
    proc = _run(
        """
        import sys
        import time
        import cytask

        cytask.set_default_engine(cytask.Engine(workers=1))

        @cytask.task
        def work(i):
            time.sleep(0.01)
            sys.stdout.write(f"done {i}\\n")  # one write: print() pieces interleave
            sys.stdout.flush()

        for i in range(10):
            work.delay(i)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"done {i}" for i in range(10)]
