"""Starlette endpoints of benchmarks/http/run.py: each answers with an id, and counts.

- /ceiling enqueues nothing;
- /await-only enqueues nothing but awaits once (a future resolved on the next loop turn):
  what any endpoint that awaits something pays, as /cytask-sqlite awaits its commit;
- /cytask submits a no-op to the engine of ``cytask.contrib.asgi.lifespan``
  (``gil_share=0.2``, ``copy_context=True``, ``linger=0.0005``);
- /cytask-plain submits to ``Engine()`` with the engine's own defaults;
- /cytask-native submits a compiled (Numba) no-op, which its worker runs without the GIL;
- /threadpool submits to ``ThreadPoolExecutor(1)``, the plain baseline;
- /background adds the no-op to Starlette's ``BackgroundTasks``;
- /cytask-sqlite awaits ``asubmit`` of an engine that only produces, on the SQLite store
  named by BENCH_STORE_URL (each task committed before the answer, the requests of one
  loop turn in one commit; run.py runs a ``cytask worker``);
- /celery calls ``.delay()`` of a Celery task on the Redis broker named by
  BENCH_CELERY_BROKER (run.py starts that redis-server and a Celery worker);
- /count says how many tasks each endpoint accepted and how many ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from http_tasks import durable_noop
from starlette.applications import Starlette
from starlette.background import BackgroundTasks
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import cytask
from cytask.contrib.asgi import running

WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))
STORE_URL = os.environ.get("BENCH_STORE_URL")
CELERY = bool(os.environ.get("BENCH_CELERY_BROKER"))
if os.environ.get("BENCH_SWITCH_INTERVAL"):  # the p99 experiment in README.md
    sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))
ids = itertools.count(1)
KINDS = (
    "cytask", "cytask-plain", "cytask-native", "background", "cytask-sqlite", "celery",
    "threadpool",
)  # fmt: skip
accepted = {k: itertools.count() for k in KINDS}
ran = {k: itertools.count() for k in KINDS}


def noop(kind: str) -> None:
    next(ran[kind])  # next() on itertools.count is atomic under the GIL


def value(counter: itertools.count[int]) -> int:
    return int(repr(counter)[6:-1])  # count(N): the next value, i.e. how many so far


# compiled tasks need no GIL, and count themselves in their engine's stats
native = cytask.Engine(workers=WORKERS, name="native")


@cytask.task(compile_to_c=True, engine=native)
def native_noop(x: int) -> int:
    return x + 1


native.warmup()


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[Mapping[str, Any]]:
    plain = cytask.Engine(workers=WORKERS, name="plain")
    # a web process that only enqueues; a `cytask worker` process runs the tasks
    durable = cytask.Engine(workers=0, store=STORE_URL) if STORE_URL else None
    if CELERY:
        import celery_tasks

        celery_tasks.reset()
    async with running(workers=WORKERS, drain_timeout=30) as eng:
        yield {"cytask": eng, "plain": plain, "durable": durable}
    plain.shutdown(wait=True, timeout=30)
    native.shutdown(wait=True, timeout=30)
    if durable is not None:
        durable.shutdown(wait=True, timeout=30)


async def ceiling(request: Request) -> JSONResponse:
    return JSONResponse({"id": next(ids)})


async def await_only(request: Request) -> JSONResponse:
    loop = asyncio.get_running_loop()
    turn = loop.create_future()
    loop.call_soon(turn.set_result, None)
    await turn
    return JSONResponse({"id": next(ids)})


async def with_cytask(request: Request) -> JSONResponse:
    next(accepted["cytask"])
    h = request.state.cytask.submit(noop, "cytask")
    return JSONResponse({"id": h.task_id})


async def with_cytask_plain(request: Request) -> JSONResponse:
    next(accepted["cytask-plain"])
    h = request.state.plain.submit(noop, "cytask-plain")
    return JSONResponse({"id": h.task_id})


async def with_cytask_native(request: Request) -> JSONResponse:
    next(accepted["cytask-native"])
    h = native.submit(native_noop, 1)
    return JSONResponse({"id": h.task_id})


# the plain alternative: one thread of the standard library's pool, no ids, no priorities
pool = ThreadPoolExecutor(max_workers=WORKERS)


async def with_threadpool(request: Request) -> JSONResponse:
    next(accepted["threadpool"])
    pool.submit(noop, "threadpool")
    return JSONResponse({"id": next(ids)})


async def with_background(request: Request) -> JSONResponse:
    next(accepted["background"])
    tasks = BackgroundTasks()
    tasks.add_task(noop, "background")
    return JSONResponse({"id": next(ids)}, background=tasks)


async def with_cytask_sqlite(request: Request) -> JSONResponse:
    next(accepted["cytask-sqlite"])
    h = await request.state.durable.asubmit(durable_noop, 1)  # one commit per loop turn
    return JSONResponse({"id": h.task_id})


async def with_celery(request: Request) -> JSONResponse:
    import celery_tasks

    next(accepted["celery"])
    r = celery_tasks.noop.delay()
    return JSONResponse({"id": r.id})


async def count(request: Request) -> JSONResponse:
    counts = {k: {"accepted": value(accepted[k]), "ran": value(ran[k])} for k in accepted}
    counts["cytask-native"]["ran"] = native.stats().succeeded_tasks
    if request.state.durable is not None:
        counts["cytask-sqlite"]["ran"] = request.state.durable._durable.store.counts()["succeeded"]
    if CELERY:
        import celery_tasks

        counts["celery"]["ran"] = celery_tasks.ran()
    return JSONResponse(counts)


app = Starlette(
    routes=[
        Route("/ceiling", ceiling),
        Route("/await-only", await_only),
        Route("/cytask", with_cytask),
        Route("/cytask-plain", with_cytask_plain),
        Route("/cytask-native", with_cytask_native),
        Route("/background", with_background),
        Route("/threadpool", with_threadpool),
        Route("/cytask-sqlite", with_cytask_sqlite),
        Route("/celery", with_celery),
        Route("/count", count),
    ],
    lifespan=lifespan,
)
