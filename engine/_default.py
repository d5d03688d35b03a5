"""The default engine used by ``@task`` functions declared without ``engine=``.

Created on first use and drained at interpreter exit, so ``add.delay(1, 2)`` in a
script runs before the script ends.
"""

from __future__ import annotations

import atexit
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cytask._engine import Engine

__all__ = ["default_engine", "set_default_engine"]

_default: Engine | None = None
_lock = threading.Lock()
_atexit_registered = False


def default_engine() -> Engine:
    """The process-wide engine (created lazily with default options)."""
    global _default, _atexit_registered
    eng = _default
    if eng is not None and not eng.closed:
        return eng
    with _lock:
        if _default is None or _default.closed:
            from cytask._engine import Engine

            _default = Engine(name="cytask-default")
            if not _atexit_registered:
                atexit.register(_drain_at_exit)
                _atexit_registered = True
        return _default


def set_default_engine(engine: Engine | None) -> None:
    """Make `engine` the default (None: create a fresh one on next use)."""
    global _default, _atexit_registered
    from cytask._engine import Engine

    if engine is not None and not isinstance(engine, Engine):
        raise TypeError(f"Expected a cytask.Engine or None for engine, got {type(engine).__name__}")
    with _lock:
        _default = engine
        if engine is not None and not _atexit_registered:
            atexit.register(_drain_at_exit)
            _atexit_registered = True


def _drain_at_exit() -> None:
    eng = _default
    if eng is not None and not eng.closed:
        eng.shutdown(wait=True)
