"""The engine's timer thread: deadline order, and a failing action never stops it."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from cytask._timer import Timer


def test_actions_run_in_deadline_order_and_errors_are_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reported: list[BaseException] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u.exc_value))
    timer = Timer("test")
    order: list[str] = []
    done = threading.Event()

    def boom() -> None:
        raise KeyError("boom")

    now = time.monotonic()
    timer.call_at(now + 0.03, lambda: (order.append("last"), done.set()))
    timer.call_at(now + 0.01, boom)
    timer.call_at(now + 0.0, order.append, "first")
    assert done.wait(10)
    assert order == ["first", "last"]  # the raising action in between did not stop the timer
    assert len(reported) == 1 and isinstance(reported[0], KeyError)
    assert timer.stop() == []
