"""The process around the engines: interpreter exit, ``fork()`` and signals.

* **Exit.**  Every engine drains at interpreter exit, like ``ThreadPoolExecutor``: the
  hook runs in ``threading``'s shutdown, before non-daemon threads are joined.  Each
  engine stays open while its workers drain (``Engine._drain_at_exit``), so a task
  queued by another task during the drain lands on the same engine and runs, with no
  new engine or thread (Python 3.12 refuses new threads that late); engines created
  meanwhile anyway are drained in a further round.  An engine whose
  ``shutdown(wait=True)`` already returned is left as it is.
* **Fork.**  In a child of ``os.fork()`` (multiprocessing's "fork", gunicorn
  ``--preload``) the parent's threads do not exist.  Each engine is reset there: what
  was queued, running, delayed or retrying belongs to the parent (which runs it) and is
  cancelled in the child; periodic schedules stay with the parent; an open engine
  starts fresh workers and takes new tasks.  The parent is untouched.
* **Signals.**  ``Engine.install_signal_handlers()`` installs `SignalDrain`.
"""

from __future__ import annotations

import _thread
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

from cytask import _core
from cytask._core import report_unraisable

if TYPE_CHECKING:
    from cytask._engine import Engine

__all__ = ["SignalDrain", "lock_free_wait", "register", "register_fork_hooks"]

# every engine not yet collected; an engine with live workers is never collected
_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
# True once the exit drain began: a drain thread no longer re-raises its signal in the
# main thread (it is finalizing).  Written under _exit_lock.
_exiting = False
_exit_lock = threading.Lock()
# objects of the parent's threads (timer, event loop, ...) found in a fork() child: kept
# referenced, untouched, so that no finalizer runs the parent's code in the child
_inherited: list[object] = []
# per thread: how deep it is in waits that hold none of cytask's locks (lock_free_wait)
_local = threading.local()
_PKG_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def register(engine: Engine) -> None:
    """Called by every new Engine: drained at exit, reset after fork."""
    _engines.add(engine)


# engines nobody refers to any more, kept while their shutdown(wait=False) lets their
# workers leave (Engine._orphaned): by id, under the GIL
_orphans: dict[int, Engine] = {}


def keep(engine: Engine) -> None:
    """Keep a dropped engine until `release` (its workers use it without a reference)."""
    _orphans[id(engine)] = engine


def release(engine: Engine) -> None:
    _orphans.pop(id(engine), None)


# -- interpreter exit ---------------------------------------------------------------


# True once Ctrl-C interrupted a drain at interpreter exit: the user wants out, so the
# drains left (and the interrupted one, again) cancel what is queued and wait no more.
# Written and read by the main thread only (the exit drains run there).
_exit_hurried = False


def exit_hurried() -> bool:
    """True once Ctrl-C interrupted a drain at interpreter exit (see drain_at_exit)."""
    return _exit_hurried


def drain_at_exit(engine: Engine, timeout: float | None = None) -> None:
    """Drain `engine` at interpreter exit, for at most `timeout` seconds.

    Ctrl-C during the drain (a user who will not wait), or a server's quit signal whose
    handler calls ``sys.exit()`` (gunicorn's workers), does not escape into
    ``threading._shutdown`` (a traceback, and no engine drained after it): what is
    queued is cancelled instead, so every handle still ends, the drain waits for nothing
    more, and so do the drains after it.  Tasks already running end with the process.
    """
    global _exit_hurried
    for _ in range(3):  # a further Ctrl-C during the (short) hurried drain: once more
        try:
            if _exit_hurried:
                engine.shutdown(wait=True, timeout=0, cancel_pending=True)
            elif timeout is None:  # the engine's own: a signal's deadline, if any
                engine._drain_at_exit()
            else:
                engine.shutdown(wait=True, timeout=timeout)
            return
        except (KeyboardInterrupt, SystemExit):  # SystemExit: a server's quit handler
            _exit_hurried = True


def _drain_all_at_exit() -> None:
    global _exiting
    with _exit_lock:
        _exiting = True
    # a task may create an engine while others drain (a bare @task's default, where
    # threads may still start): repeat until every engine has drained
    while True:
        pending = [eng for eng in list(_engines) if not eng._exit_drained]
        if not pending:
            return
        for eng in pending:
            drain_at_exit(eng)


def _register_exit_hook() -> None:
    try:
        # the hook concurrent.futures uses: it runs before threads are joined, ahead of
        # atexit callbacks
        threading._register_atexit(_drain_all_at_exit)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # no such hook, or already shutting down
        import atexit

        atexit.register(_drain_all_at_exit)


# -- fork ---------------------------------------------------------------------------

# resources' own resets in a fork() child, run before any engine is reset (which may
# use them), in the order registered
_resource_resets: list[Callable[[], None]] = []


def register_fork_hooks(
    *,
    before: Callable[[], None],
    after_in_parent: Callable[[], None],
    after_in_child: Callable[[], None],
) -> None:
    """Hooks of a resource that engines use across ``fork()`` (a store's connections).

    ``before`` runs ahead of the hooks registered earlier (``os.register_at_fork``'s
    order); ``after_in_child`` runs before the engines are reset in the child, so a
    reset engine finds the resource usable.
    """
    os.register_at_fork(before=before, after_in_parent=after_in_parent)
    _resource_resets.append(after_in_child)


def _after_fork_in_child() -> None:
    global _exit_lock
    _exit_lock = threading.Lock()  # another thread may have held it at the fork
    for reset in _resource_resets:
        reset()
    _core._after_fork_in_child()
    from cytask import _default

    _default._after_fork_in_child()
    for eng in list(_engines):
        try:
            eng._after_fork_in_child()
        except BaseException as exc:
            report_unraisable(exc, f"resetting engine {eng.name} in a fork() child")


def keep_inherited(*objects: object) -> None:
    """Keep objects of the parent's threads alive, untouched, in a fork() child."""
    _inherited.extend(o for o in objects if o is not None)


# -- signals ------------------------------------------------------------------------


@contextmanager
def lock_free_wait() -> Iterator[None]:
    """Mark a wait during which this thread holds none of cytask's locks.

    A signal handler interrupting the main thread there may drain synchronously.
    """
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


def _may_hold_engine_locks(frame: FrameType | None) -> bool:
    """Could the interrupted main thread hold one of cytask's locks?

    cytask takes its Python locks only inside functions of this package, and the
    native core never runs signal handlers while it holds one.  So the main thread
    holds none when no frame of this package is on its stack, or when it is inside a
    wait marked with `lock_free_wait` (the join of ``Engine.shutdown``).
    """
    if getattr(_local, "depth", 0) > 0:
        return False
    if frame is None:
        return True  # cannot tell: assume the worst
    while frame is not None:
        if frame.f_code.co_filename.startswith(_PKG_DIR):
            return True
        frame = frame.f_back
    return False


class _Drain:
    """One engine's drain after a signal: at most one per engine, whatever the signal."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.done = False

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


class SignalDrain:
    """A signal handler: drain the engine (at most `timeout` s), then exit.

    The handler never blocks on the engine's locks.  When the main thread was
    interrupted where it may hold one (inside the engine), the drain runs on a helper
    thread and the handler returns; the helper sends the signal to the main thread
    again once the drain is done, and this handler then exits.  Otherwise it drains
    right here.  A repeated signal while the drain runs is ignored (the drain has its
    deadline).  After the drain the previous handler runs; with none, SIGINT raises
    KeyboardInterrupt and other signals raise SystemExit(128 + signum).
    """

    def __init__(self, engine: Engine, timeout: float, previous: Any) -> None:
        self._engine = weakref.ref(engine)
        self._timeout = timeout
        self._previous = previous

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        eng = self._engine()
        if eng is not None:
            drain = eng._signal_drain
            if drain is None:
                drain = eng._signal_drain = _Drain(time.monotonic() + self._timeout)
                if _may_hold_engine_locks(frame):
                    try:
                        _thread.start_new_thread(_drain_in_thread, (eng, drain, signum))
                        return
                    except RuntimeError:
                        # no thread to be had (the interpreter is finalizing): draining
                        # here could wait on a lock this thread holds, so exit undrained
                        drain.done = True
                else:
                    try:
                        eng.shutdown(wait=True, timeout=drain.remaining())
                    finally:
                        drain.done = True
            elif not drain.done:
                return
        self._exit(signum, frame)

    def _exit(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, frame)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            raise SystemExit(128 + signum)


def _drain_in_thread(eng: Engine, drain: _Drain, signum: int) -> None:
    try:
        eng.shutdown(wait=True, timeout=drain.remaining())
    except BaseException as exc:
        report_unraisable(exc, f"the drain of engine {eng.name} after signal {signum}")
    finally:
        drain.done = True
        with _exit_lock:
            if not _exiting:
                # the main thread runs the handler again, which now exits
                signal.pthread_kill(threading.main_thread().ident or 0, signum)


_register_exit_hook()
# After the modules whose own fork hooks reinitialise locks (logging's is the one every
# library takes): a child's hooks run in registration order, and ours start threads (a
# store's feeder, which logs through redis-py).  Registered first, ours ran while logging's
# lock was still held by the forking thread, and a thread that blocked on it then waited
# forever (logging gives the lock a fresh state, not a release).
import logging  # noqa: E402, F401  (already imported by cytask; imported here for the order)

os.register_at_fork(after_in_child=_after_fork_in_child)
