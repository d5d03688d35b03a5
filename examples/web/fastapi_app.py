"""A FastAPI app on cytask: ``lifespan()`` as is, the engine reached through a dependency.

    pip install 'cytask[fastapi]'        # uvicorn and fastapi
    uvicorn --app-dir examples/web fastapi_app:app --port 8000

    curl -X POST 'localhost:8000/emails?to=ann@example.org'   # {"id": 1}: answered at once
    curl localhost:8000/emails/1                              # status, result once done
    curl localhost:8000/emails/1/wait                         # awaits it (the loop stays free)

Ctrl-C or SIGTERM: uvicorn stops accepting connections, then the lifespan drains the
engine (for at most 30 s) before the process exits.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request

import cytask
from cytask.contrib.asgi import lifespan

TASK_SECONDS = float(os.environ.get("TASK_SECONDS", "0.05"))

app = FastAPI(lifespan=lifespan(workers=4, drain_timeout=30))


def engine(request: Request) -> cytask.Engine:
    eng: cytask.Engine = request.state.cytask
    return eng


Engine = Annotated[cytask.Engine, Depends(engine)]


@cytask.task(retries=2, retry_backoff=0.1, retry_on=(ConnectionError,))
def send_email(to: str) -> str:
    """Stands in for a call to a mail service (the task's engine is the one it is
    submitted to: ``eng.submit(send_email, ...)``)."""
    time.sleep(TASK_SECONDS)
    return f"sent to {to}"


def describe(h: cytask.TaskHandle[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": h.task_id, "status": h.status.value, "attempts": h.attempts}
    if h.status is cytask.TaskStatus.SUCCEEDED:
        out["result"] = h.result(timeout=0)
    elif h.status is cytask.TaskStatus.FAILED:
        out["error"] = repr(h.exception(timeout=0))
    return out


def find(eng: cytask.Engine, task_id: int) -> cytask.TaskHandle[Any]:
    h = eng.get(task_id)
    if h is None:
        raise HTTPException(status_code=404, detail="unknown task id")
    return h


@app.post("/emails")
async def enqueue(to: str, eng: Engine) -> dict[str, int]:
    return {"id": eng.submit(send_email, to).task_id}


@app.get("/emails/{task_id}")
async def show(task_id: int, eng: Engine) -> dict[str, Any]:
    return describe(find(eng, task_id))


@app.get("/emails/{task_id}/wait")
async def wait(task_id: int, eng: Engine) -> dict[str, Any]:
    h = find(eng, task_id)
    with contextlib.suppress(Exception):  # a failed task is reported, not raised
        await h
    return describe(h)
