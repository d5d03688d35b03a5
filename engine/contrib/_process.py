"""Per-process bookkeeping shared by the integrations: fork generations and exit drains.

An integration makes its engine lazily, once per process: a server that imports the
app and then forks (gunicorn ``--preload``, multiprocessing "fork") starts no engine
thread before the fork, and an engine made by a parent is replaced in the child (whose
copy has none of the parent's threads) on its next use there.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from cytask import _lifecycle

if TYPE_CHECKING:
    from cytask._engine import Engine

__all__ = ["at_exit", "exit_drain", "generation", "retire"]

log = logging.getLogger("cytask.contrib")

# bumped in each fork() child; an engine remembers the generation it was made in
_generation = 0
_exit_callbacks: list[Callable[[], None]] = []


def generation() -> int:
    """Changes in a fork() child: compare with the value saved when an engine was made."""
    return _generation


def _forked() -> None:
    global _generation
    _generation += 1


def retire(inherited: Engine | None) -> None:
    """Stop an engine a fork() child inherited and is replacing with its own.

    The engine's own fork handling restarts its workers in the child and cancels what
    the parent had queued; the child's integration makes a fresh engine (with fresh
    results) instead, so the inherited one is closed at once, without waiting.
    """
    if inherited is not None and not inherited.closed:
        inherited.shutdown(wait=False, cancel_pending=True)


def at_exit(callback: Callable[[], None]) -> None:
    """Run `callback` (a drain with its own deadline) when the interpreter exits."""
    _exit_callbacks.append(callback)


def exit_drain(engine: Engine, timeout: float | None, what: str) -> bool:
    """Drain `engine` (`what`, for the log) at exit for at most `timeout` seconds;
    False if it had drained already.

    After a Ctrl-C during the exit drains it cancels what is queued instead and waits
    no more (``cytask._lifecycle.drain_at_exit``), here and in every drain after it.
    """
    if engine._exit_drained:  # a shutdown(wait=True) of its own already returned
        return False
    if _lifecycle.exit_hurried():
        log.info("%s: cancelling what is still queued (Ctrl-C)", what)
    else:
        limit = "no time limit" if timeout is None else f"at most {timeout:g} s"
        log.info("%s: draining (%s; Ctrl-C cancels what is still queued)", what, limit)
    _lifecycle.drain_at_exit(engine, timeout)
    return True


def _run_exit_callbacks() -> None:
    callbacks = list(reversed(_exit_callbacks))
    done = interrupted = 0
    while done < len(callbacks):
        try:
            try:
                callbacks[done]()
            except Exception:  # one integration's failure must not keep the others from draining
                log.exception("cytask: draining at exit failed in %r", callbacks[done])
            done += 1
        except (KeyboardInterrupt, SystemExit):
            # Ctrl-C (or a server's quit handler) anywhere in here, a log call included:
            # from now on every drain hurries, and the interrupted callback runs again
            # (each skips the engines it has drained) unless it was interrupted thrice
            _lifecycle._exit_hurried = True
            interrupted += 1
            if interrupted % 3 == 0:
                done += 1


os.register_at_fork(after_in_child=_forked)
# Run before the interpreter joins non-daemon threads, as concurrent.futures does, so
# that these drains (with their deadlines) come ahead of any drain without one.
getattr(threading, "_register_atexit", atexit.register)(_run_exit_callbacks)
