"""Errors nobody can receive (done callbacks, timer actions, failed worker spawns) reach
``sys.unraisablehook`` as a real ``UnraisableHookArgs``, and the default hook prints them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import cytask
from cytask import Engine, task
from cytask._core import report_unraisable


class Hook:
    """A custom sys.unraisablehook that records what arrives; `got` fires on each report."""

    def __init__(self) -> None:
        self.reports: list[Any] = []
        self.got = threading.Event()

    def __call__(self, args: Any) -> None:
        self.reports.append(args)
        self.got.set()

    def wait_for(self, exc_type: type[BaseException], timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            for args in self.reports:
                if isinstance(args.exc_value, exc_type):
                    # what CPython's own reports pass; the default hook accepts nothing else
                    assert type(args) is _same_type_as_cpython()
                    return args
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no {exc_type.__name__} reached the hook: {self.reports!r}")
            self.got.clear()
            self.got.wait(min(left, 0.05))


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hook]:
    h = Hook()
    monkeypatch.setattr(sys, "unraisablehook", h)
    yield h


def _same_type_as_cpython() -> type:
    """The type CPython itself passes to the hook (not exposed in sys on 3.11)."""
    seen: list[Any] = []
    old = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:

        class Dies:
            def __del__(self) -> None:
                raise ValueError("from __del__")

        Dies()
    finally:
        sys.unraisablehook = old
    return type(seen[0])


def test_report_is_a_real_unraisable_hook_args(hook: Hook) -> None:
    try:
        raise KeyError("lost")
    except KeyError as exc:
        report_unraisable(exc, "a test", obj=test_report_is_a_real_unraisable_hook_args)
    args = hook.wait_for(KeyError)  # a real UnraisableHookArgs (checked there)
    assert args.exc_type is KeyError and args.exc_traceback is not None
    assert args.err_msg == "Exception ignored in a test"


def test_done_callback_error_arrives(engine: Engine, hook: Hook) -> None:
    gate = threading.Event()
    h = engine.submit(gate.wait, 30)

    def bad_callback(_: object) -> None:
        raise ZeroDivisionError("in callback")

    h.add_done_callback(bad_callback)
    gate.set()
    assert h.result(timeout=30) is True
    args = hook.wait_for(ZeroDivisionError)
    assert f"done callback {bad_callback!r} of task {h.task_id}" in args.err_msg
    # the worker survived the callback
    assert engine.submit(int, 5).result(timeout=30) == 5


def test_callback_on_a_finished_handle_is_reported_not_raised(engine: Engine, hook: Hook) -> None:
    # the same rule as for a callback that runs later (and as concurrent.futures,
    # which logs instead of raising): the caller of add_done_callback gets nothing
    h = engine.submit(int, 1)
    h.result(timeout=30)
    ran: list[object] = []

    def bad_callback(handle: object) -> None:
        ran.append(handle)
        raise ValueError("late callback")

    h.add_done_callback(bad_callback)  # does not raise
    assert ran == [h]
    args = hook.wait_for(ValueError)
    assert f"of task {h.task_id}" in args.err_msg


def test_timer_action_error_arrives(engine: Engine, hook: Hook) -> None:
    def broken_action() -> None:
        raise LookupError("timer action")

    assert engine._timer_call_at(time.monotonic(), broken_action)
    args = hook.wait_for(LookupError)
    assert "timer action" in args.err_msg
    # the timer survived: a delayed task still runs
    assert engine.add_task(int, 7, delay=0.01).result(timeout=30) == 7


def test_failed_worker_spawn_arrives(
    make_engine: Callable[..., Engine], hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    eng = make_engine(workers=1)
    gate = threading.Event()

    @task(engine=eng, timeout=0.05)
    def stuck() -> None:
        gate.wait(30)

    class SpawnFailed(RuntimeError):
        pass

    def no_threads(self: Engine) -> int:
        raise SpawnFailed("can't start new thread")

    # the time limit expires, the engine tries to start a replacement worker, and the
    # thread cannot be created: that failure must be visible, not swallowed
    monkeypatch.setattr(Engine, "_spawn_worker", no_threads)
    h = stuck.delay()
    with pytest.raises(cytask.TaskTimeout):
        h.result(timeout=30)
    hook.wait_for(SpawnFailed)
    gate.set()


def test_the_default_hook_prints_the_report() -> None:
    # with no custom hook, the report must reach stderr (the old object made the
    # default hook raise TypeError, which was swallowed: nothing was printed)
    code = textwrap.dedent(
        """
        import cytask
        eng = cytask.Engine(workers=1)
        h = eng.submit(int, 1)
        def bad_callback(_):
            raise ValueError("callback boom")
        h.add_done_callback(bad_callback)
        h.result(timeout=30)
        eng.submit(int).result(timeout=30)
        eng.shutdown()
        print("alive")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "alive"
    assert "Exception ignored in done callback" in proc.stderr
    assert "ValueError: callback boom" in proc.stderr
    assert "Traceback" in proc.stderr
