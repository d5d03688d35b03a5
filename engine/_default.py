"""The default engine used by ``@task`` functions declared without ``engine=``.

Created on first use.  Like every engine it drains at interpreter exit (see
``cytask._lifecycle``), so ``add.delay(1, 2)`` in a script runs before the script
ends, and so does a default that ``set_default_engine()`` replaced.  It stays open
while it drains, so tasks queued by its tasks then run on it too.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cytask._engine import Engine

__all__ = ["default_engine", "set_default_engine"]

_default: Engine | None = None
_lock = threading.Lock()


def default_engine() -> Engine:
    """The process-wide engine (created lazily with default options)."""
    global _default
    eng = _default
    if eng is not None and not eng.closed:
        return eng
    with _lock:
        if _default is None or _default.closed:
            from cytask._engine import Engine

            _default = Engine(name="cytask-default")
        return _default


def set_default_engine(engine: Engine | None) -> None:
    """Make `engine` the default (None: create a fresh one on next use).

    The engine replaced keeps running what it holds and still drains at exit.
    """
    global _default
    from cytask._engine import Engine

    if engine is not None and not isinstance(engine, Engine):
        raise TypeError(f"Expected a cytask.Engine or None for engine, got {type(engine).__name__}")
    with _lock:
        _default = engine


def _after_fork_in_child() -> None:
    """In a fork() child: a thread of the parent may have held the lock."""
    global _lock
    _lock = threading.Lock()
