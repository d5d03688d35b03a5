"""cytask in an ASGI app (Starlette, FastAPI): an engine that lives as long as the app.

```python
from starlette.applications import Starlette
from cytask.contrib.asgi import lifespan

app = Starlette(routes=[...], lifespan=lifespan(workers=2))   # Engine(gil_share=0.2, workers=2)

async def enqueue(request):
    h = request.state.cytask.submit(send_email, "a@b.c")    # answers at once
    return JSONResponse({"id": h.task_id})

async def result(request):
    h = request.state.cytask.get(int(request.path_params["id"]))
    return JSONResponse({"result": await h})                 # never blocks the event loop
```

At startup ``lifespan()`` creates the engine (or takes yours) and yields it as
``state["cytask"]`` (Starlette: ``request.state.cytask``; FastAPI: the same through
``Request``).  At shutdown it stops taking tasks and drains the queues on a thread of
its own while the event loop goes on running, for at most ``drain_timeout`` seconds;
tasks still queued then are cancelled (their handles say so), and tasks still running
(Python threads cannot be stopped) end with the process.  To combine it with a
lifespan of your own, use :func:`running` inside yours.

**Signals.** Under uvicorn (and hypercorn, granian) the server owns SIGINT and SIGTERM:
it installs its own handlers while it serves, stops accepting connections, waits for
open requests, then runs the lifespan's shutdown, which is where the engine drains.  So
do not call ``Engine.install_signal_handlers()`` in an ASGI app: its handlers would
either be replaced by the server's or replace them (and then the server would never
shut down gracefully).  Ctrl-C or ``kill -TERM`` on the server drains the engine within
``drain_timeout``.  A second Ctrl-C during that drain cancels the tasks still queued
(their handles say so) and the server exits as soon as the running ones return (uvicorn
by itself would wait for the lifespan's drain to its end); so does gunicorn's quick
shutdown (Ctrl-C on its master) of a ``uvicorn.workers.UvicornWorker``, which kills the
worker 2 s later.  Under gunicorn keep ``drain_timeout`` below ``--graceful-timeout``.

**How it differs from Starlette's ``BackgroundTasks``.** Those run after the response is
sent, one after another in the request's own task; sync ones go through the 40-thread
pool that sync endpoints also use, a failure drops the rest of that request's tasks, and
they have no id, result, priority, retries, time limit or drain at shutdown.  cytask
tasks start at once on the engine's workers (not after the response), independently of
each other, with a handle an endpoint can return and another can ``await``, and the
engine's retries, priorities, delays and shutdown drain.

The default engine here is ``Engine(gil_share=0.2, copy_context=True, linger=0.0005)``
(``copy_context=False`` with a ``store=``: a stored task may run in another process):
the workers leave the event loop the GIL whenever it has Python to run (see the README,
"Sharing the GIL with your application"; pass ``gil_share=1.0`` for full task throughput
instead), each task runs in a copy of its endpoint's ``contextvars`` (request ids,
tracing spans), taken at submit as asyncio does, and under a stream of requests a worker
takes the tasks of each half millisecond in one go instead of being woken for each
(``linger=0`` for no nap).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from types import FrameType
from typing import Any

from cytask._core import report_unraisable
from cytask._engine import Engine
from cytask._validate import check_nonneg_number

__all__ = ["WEB_LINGER", "drain", "lifespan", "running"]

#: the contrib engines' ``Engine(linger=...)``: under a stream of requests a worker naps
#: 0.5 ms between batches instead of being woken for every task
WEB_LINGER = 0.0005

EngineSource = Engine | Callable[[], Engine] | None


async def drain(engine: Engine, timeout: float | None = 30.0, cancel_pending: bool = False) -> None:
    """``engine.shutdown(wait=True, timeout=timeout)`` without blocking the event loop.

    The drain runs on a thread of its own (not the loop's default executor, which may
    be busy or shut down); this coroutine waits for it.  If the coroutine is cancelled
    the drain goes on to its deadline anyway, so no task is left half-stopped.
    """
    check_nonneg_number(timeout, "timeout", allow_none=True)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finish(exc: BaseException | None) -> None:
        if done.done():
            return
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)

    def run() -> None:
        exc: BaseException | None = None
        try:
            engine.shutdown(wait=True, timeout=timeout, cancel_pending=cancel_pending)
        except BaseException as e:
            exc = e
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(finish, exc)

    # the handlers first: a quit signal that comes as the drain starts must hurry it
    # (gunicorn kills a worker 2 s after its quick-shutdown SIGQUIT)
    with _ctrl_c_hurries(engine, loop, finish):
        # not a daemon: an interpreter that exits meanwhile still waits for the drain,
        # which ends by its deadline
        threading.Thread(target=run, name=f"{engine.name}-drain").start()
        await asyncio.shield(done)


# the signals that mean "quit now" to a server that is already shutting down: Ctrl-C,
# and SIGQUIT, which gunicorn's master sends its workers (UvicornWorker included) for a
# quick shutdown before it kills them 2 s later
_HURRY_SIGNALS = (signal.SIGINT, signal.SIGQUIT)


@contextlib.contextmanager
def _ctrl_c_hurries(
    engine: Engine, loop: asyncio.AbstractEventLoop, stop_waiting: Callable[[None], None]
) -> Iterator[None]:
    """While the drain runs, Ctrl-C (the server's "force quit") or gunicorn's quick
    shutdown (SIGQUIT) also cancels what is still queued and stops waiting for it, then
    runs the server's own handler.

    uvicorn (like most servers) awaits the lifespan's shutdown to its end even after a
    second Ctrl-C; without this, a long queue would keep it for the whole
    ``drain_timeout`` (under gunicorn: until the master kills the worker, mid-drain).
    Tasks already running cannot be stopped (Python threads): the process exits once
    they return.  Only on the main thread, and only over a Python handler (SIG_DFL and
    SIG_IGN stay as they are).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {int(sig): signal.getsignal(sig) for sig in _HURRY_SIGNALS}

    def hurry() -> None:
        try:
            engine.shutdown(wait=False, cancel_pending=True)
        except BaseException as exc:  # pragma: no cover - shutdown(wait=False) does not raise
            report_unraisable(exc, f"cancelling the queue of engine {engine.name} on Ctrl-C")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # the engine's locks may be held by the code this signal interrupted: the
        # cancelling happens on a thread of its own, the loop learns of it by its queue
        threading.Thread(target=hurry, name=f"{engine.name}-ctrl-c", daemon=True).start()
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(stop_waiting, None)
        handler = previous[signum]
        if callable(handler):
            handler(signum, frame)

    mine = [sig for sig, handler in previous.items() if callable(handler)]
    for sig in mine:
        signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig in mine:
            if signal.getsignal(sig) is on_signal:
                signal.signal(sig, previous[sig])


@contextlib.asynccontextmanager
async def running(
    engine: EngineSource = None,
    *,
    drain_timeout: float | None = 30.0,
    cancel_pending: bool = False,
    **engine_options: Any,
) -> AsyncIterator[Engine]:
    """An engine for the body of an ``async with``, drained off the loop on exit.

    `engine`: an ``Engine``, a function that makes one (called on entry, so each
    run of the lifespan gets a fresh engine), or None for
    ``Engine(gil_share=0.2, copy_context=True, linger=WEB_LINGER, **engine_options)``
    (``copy_context`` off with a ``store``).  An ``Engine`` given here is drained on
    exit like one made here, so it serves one run: pass a function to run more.
    """
    check_nonneg_number(drain_timeout, "drain_timeout", allow_none=True)
    eng = _make(engine, engine_options)
    try:
        yield eng
    finally:
        await drain(eng, drain_timeout, cancel_pending)


def lifespan(
    engine: EngineSource = None,
    *,
    drain_timeout: float | None = 30.0,
    cancel_pending: bool = False,
    state_key: str = "cytask",
    **engine_options: Any,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[Mapping[str, Any]]]:
    """A ``lifespan=`` for Starlette/FastAPI: an engine in ``state[state_key]``.

    `engine` as for :func:`running`; `drain_timeout` bounds the drain at shutdown
    (None: no limit); ``cancel_pending=True`` cancels queued tasks instead of running
    them.  Extra keywords go to ``Engine(...)`` when the engine is made here.
    """
    check_nonneg_number(drain_timeout, "drain_timeout", allow_none=True)
    if not isinstance(state_key, str):
        raise TypeError(f"Expected str for state_key, got {type(state_key).__name__}")
    if engine is not None and engine_options:
        raise TypeError(
            f"Expected engine options only without an engine, got {sorted(engine_options)} "
            f"beside engine={engine!r}: pass them to your Engine(...) instead"
        )
    _check_source(engine)

    @contextlib.asynccontextmanager
    async def app_lifespan(app: Any) -> AsyncIterator[Mapping[str, Any]]:
        async with running(
            engine, drain_timeout=drain_timeout, cancel_pending=cancel_pending, **engine_options
        ) as eng:
            yield {state_key: eng}

    return app_lifespan


def _check_source(engine: EngineSource) -> None:
    if engine is not None and not isinstance(engine, Engine) and not callable(engine):
        raise TypeError(
            f"Expected an Engine, a function returning one, or None for engine, "
            f"got {type(engine).__name__}"
        )


def _make(engine: EngineSource, options: dict[str, Any]) -> Engine:
    _check_source(engine)
    if engine is None:
        options.setdefault("gil_share", 0.2)
        # a stored task may run in another process, where no context of ours exists
        options.setdefault("copy_context", options.get("store") is None)
        options.setdefault("linger", WEB_LINGER)
        return Engine(**options)
    if isinstance(engine, Engine):
        if engine.closed:
            raise RuntimeError(
                f"Expected an open Engine for engine, got {engine.name!r}, which is shut "
                f"down (an earlier run of this lifespan drained it): pass a function that "
                f"makes one, lifespan(lambda: Engine(...)), to run the app more than once"
            )
        return engine
    made = engine()
    if not isinstance(made, Engine):
        raise TypeError(f"Expected the engine factory to return an Engine, got {made!r}")
    return made
