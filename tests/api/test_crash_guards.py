"""Python code must not be able to crash the process through the public API.

Each case runs in a child process with a hard timeout: before these guards each one
was a segmentation fault (a ring index past the array, a NULL engine, rings that
were never allocated, a size that overflowed the allocation).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CASES = {
    "huge_queue_size": (
        """
        import cytask
        try:
            cytask.Engine(workers=1, queue_size=2**60)
        except ValueError as exc:
            print(exc)
        """,
        "Expected queue_size <= 16777216",
    ),
    "handle_made_by_hand": (
        """
        import cytask
        try:
            cytask.TaskHandle()
        except TypeError as exc:
            print(exc)
        h = cytask.TaskHandle.__new__(cytask.TaskHandle)  # even past __init__
        print(h.cancel(), h.status, h.done())
        h2 = cytask.TaskHandle.__new__(cytask.TaskHandle)
        try:
            h2.result(timeout=1)
        except RuntimeError as exc:
            print(exc)
        h2.add_done_callback(print)
        print(h2._complete(5, ValueError("x")), h2.status)
        """,
        "TaskHandle cannot be created directly",
        "True cancelled True",
        "belongs to no engine",
        "True failed",
    ),
    "subclass_without_super_init": (
        """
        import cytask

        class MyEngine(cytask.Engine):
            def __init__(self) -> None:
                pass  # forgot super().__init__()

        eng = MyEngine()
        for call in (lambda: eng.submit(print, 1), lambda: eng.add_task(print, 1),
                     lambda: eng._spawn_worker(), lambda: eng.submit_native(1, (), b"", b"i")):
            try:
                call()
            except (RuntimeError, AttributeError) as exc:
                print(type(exc).__name__, exc)
        print(eng._cancel_queued("x"), eng._queued(), eng.get(1))
        """,
        "RuntimeError MyEngine.__init__ did not run Engine.__init__: call super().__init__",
        "0 0 None",
    ),
    "task_options_out_of_range": (
        """
        import cytask
        from cytask import Task, TaskOptions
        for kwargs in ({"priority": 7}, {"priority": -1}, {"retries": 2**40},
                       {"retry_backoff": float("nan")}, {"timeout": -1}, {"retry_on": (int,)}):
            try:
                TaskOptions("t", **kwargs)
            except (TypeError, ValueError) as exc:
                print(exc)
        eng = cytask.Engine(workers=1)
        t = cytask.task(engine=eng)(abs)
        print(eng.submit(t, -3).result(timeout=30))
        # unpickling skips __init__: the core still refuses a priority past its rings
        make, args, state = TaskOptions("t").__reduce__()
        bad = make(*args)
        bad.__setstate_cython__(("t", 7) + state[2:])
        try:
            eng.submit(Task(abs, bad, eng, False, ()), -3)
        except ValueError as exc:
            print(exc)
        eng.shutdown()
        """,
        "Expected priority between 0 and 3, got 7",
        "Expected priority between 0 and 3, got -1",
        "Expected retries between 0 and 2147483647",
        "Expected retry_backoff >= 0, got nan",
        "Expected timeout >= 0, got -1",
        "tuple of exception classes for retry_on",
        "3",
        "Expected a cytask.Priority for priority, got 7",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_crash(case: str) -> None:
    code, *expected = CASES[case]
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    for text in expected:
        assert text in proc.stdout, f"{text!r} not in:\n{proc.stdout}\n{proc.stderr}"
