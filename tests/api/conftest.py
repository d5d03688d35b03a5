"""Helpers for the task API tests: polling with a deadline, a task recorder."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from cytask import _default


def _wait_until(predicate: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    """Poll `predicate` until true; fail (not hang) after `timeout` s.

    For state that settles by itself (a pool shrinking, a status flipping on another
    thread): the deadline is a failure bound, not a guess at how long it takes.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.002)


@pytest.fixture
def wait_until() -> Callable[..., None]:
    return _wait_until


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event that blocked tasks wait on; always set at teardown so no worker stays stuck."""
    ev = threading.Event()
    yield ev
    ev.set()


@pytest.fixture
def fresh_default() -> Iterator[None]:
    """Isolate the process-wide default engine: restore it, and stop any made meanwhile."""
    saved = _default._default
    _default._default = None
    try:
        yield
    finally:
        made = _default._default
        _default._default = saved
        if made is not None and made is not saved:
            made.shutdown(wait=True, timeout=30)
