"""The Starlette app of benchmarks/http_gil/run.py: one cheap endpoint, and a pool that
chews CPU-bound Python tasks while it is measured.

Environment: GIL_POOL = none | cytask | executor, GIL_WORKERS = pool size,
GIL_TASK_US = the busy loop of each task in microseconds, GIL_SHARE = cytask's gil_share.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import cytask

POOL = os.environ.get("GIL_POOL", "none")
WORKERS = int(os.environ.get("GIL_WORKERS", "1"))
TASK_US = float(os.environ.get("GIL_TASK_US", "200"))
GIL_SHARE = float(os.environ.get("GIL_SHARE", "1.0"))


def busy(us: float) -> None:
    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass


def keep_busy(submit: Callable[..., Any], stop: threading.Event) -> None:
    """Another part of the app keeps ~20 ms of work per worker queued."""
    chunk = max(1, int(20_000 * WORKERS / TASK_US))
    in_flight: list[Any] = []
    while not stop.is_set():
        in_flight.append([submit(busy, TASK_US) for _ in range(chunk)][-1])
        if len(in_flight) > 2:
            in_flight.pop(0).result()


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    stop = threading.Event()
    if POOL == "none":
        yield
        return
    if POOL == "cytask":
        engine = cytask.Engine(workers=WORKERS, gil_share=GIL_SHARE)
        submit: Callable[..., Any] = engine.submit
        close = lambda: engine.shutdown(wait=True, cancel_pending=True)  # noqa: E731
    else:
        executor = ThreadPoolExecutor(WORKERS)
        submit = executor.submit
        close = lambda: executor.shutdown(wait=True, cancel_futures=True)  # noqa: E731
    producer = threading.Thread(target=keep_busy, args=(submit, stop), daemon=True)
    producer.start()
    yield
    stop.set()
    producer.join()
    close()


async def ping(request: Request) -> PlainTextResponse:
    return PlainTextResponse("pong")


app = Starlette(routes=[Route("/ping", ping)], lifespan=lifespan)
