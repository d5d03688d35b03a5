"""A Starlette app whose endpoints enqueue cytask tasks and read their results.

    pip install 'cytask[asgi]'           # uvicorn and starlette
    uvicorn --app-dir examples/web starlette_app:app --port 8000

    curl -X POST 'localhost:8000/tasks?n=7'    # {"id": 1}: answered at once
    curl localhost:8000/tasks/1                # {"id": 1, "status": "succeeded", "result": 49}
    curl localhost:8000/tasks/1/wait           # awaits the task without blocking the loop

Ctrl-C (or kill -TERM) stops uvicorn: it stops accepting connections, then the lifespan
drains the engine (tasks already queued still run, for at most DRAIN_TIMEOUT seconds)
and prints how many ran.  The same code works in FastAPI (``FastAPI(lifespan=...)``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import cytask
from cytask.contrib.asgi import running

TASK_SECONDS = float(os.environ.get("TASK_SECONDS", "0.05"))
DRAIN_TIMEOUT = float(os.environ.get("DRAIN_TIMEOUT", "30"))


def square(n: int) -> int:
    """Stands in for real work: a slow call to another service."""
    time.sleep(TASK_SECONDS)
    return n * n


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[Mapping[str, Any]]:
    # cytask.contrib.asgi.lifespan(workers=4) is all most apps need; this one also
    # reports what the drain did
    async with running(workers=4, drain_timeout=DRAIN_TIMEOUT) as eng:
        print(f"engine started: {eng.workers} workers, gil_share={eng.gil_share}", flush=True)
        yield {"cytask": eng}
        queued = eng.stats().total_queued
        print(f"shutting down: draining {queued} queued task(s)", flush=True)
    s = eng.stats()
    print(
        f"drained: {s.succeeded_tasks} succeeded, {s.failed_tasks} failed, "
        f"{s.cancelled_tasks} cancelled",
        flush=True,
    )


def engine_of(request: Request) -> cytask.Engine:
    eng: cytask.Engine = request.state.cytask
    return eng


async def enqueue(request: Request) -> JSONResponse:
    n = int(request.query_params.get("n", "0"))
    h = engine_of(request).submit(square, n)
    return JSONResponse({"id": h.task_id})


def describe(h: cytask.TaskHandle[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": h.task_id, "status": h.status.value}
    if h.status is cytask.TaskStatus.SUCCEEDED:
        out["result"] = h.result(timeout=0)
    elif h.status is cytask.TaskStatus.FAILED:
        out["error"] = repr(h.exception(timeout=0))
    return out


async def show(request: Request) -> JSONResponse:
    h = engine_of(request).get(int(request.path_params["task_id"]))
    if h is None:
        return JSONResponse({"error": "unknown task id"}, status_code=404)
    return JSONResponse(describe(h))


async def wait(request: Request) -> JSONResponse:
    h = engine_of(request).get(int(request.path_params["task_id"]))
    if h is None:
        return JSONResponse({"error": "unknown task id"}, status_code=404)
    with contextlib.suppress(Exception):  # a failed task is reported, not raised
        await h
    return JSONResponse(describe(h))


async def ping(request: Request) -> PlainTextResponse:
    return PlainTextResponse("pong")


app = Starlette(
    routes=[
        Route("/tasks", enqueue, methods=["POST"]),
        Route("/tasks/{task_id:int}", show),
        Route("/tasks/{task_id:int}/wait", wait),
        Route("/ping", ping),
    ],
    lifespan=lifespan,
)
