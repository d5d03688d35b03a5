"""A Flask app (an app factory) whose endpoints enqueue cytask tasks and read results.

    pip install 'cytask[flask]'
    flask --app examples/web/flask_app run --port 8000
    # or, several worker processes:  gunicorn --chdir examples/web -w 2 'flask_app:create_app()'

    curl -X POST 'localhost:8000/tasks?n=7'    # {"id": 1}: answered at once
    curl localhost:8000/tasks/1                # {"id": 1, "status": "succeeded", "result": 49}
    curl localhost:8000/tasks/1/wait           # waits for the task (this request's thread)
    curl -X POST 'localhost:8000/report'       # a task that uses current_app (app context)

Ctrl-C (or SIGTERM to a gunicorn worker) ends the process; the engine drains first, for
at most CYTASK_DRAIN_TIMEOUT seconds, and logs how many tasks ran.  Results live in the
process that ran the task: under gunicorn with several workers, read them from the
endpoint that waits in the same request (``POST /tasks?n=7&wait=1``).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from flask import Flask, current_app, request

import cytask
from cytask.contrib.flask import Cytask

tasks = Cytask(workers=4, drain_timeout=float(os.environ.get("DRAIN_TIMEOUT", "30")))
TASK_SECONDS = float(os.environ.get("TASK_SECONDS", "0.05"))


def square(n: int) -> int:
    """Stands in for real work: a slow call to another service."""
    time.sleep(TASK_SECONDS)
    return n * n


def report() -> str:
    """Needs the app context: reads the app's config through current_app."""
    return f"report for {current_app.config['SITE_NAME']} from pid {os.getpid()}"


def describe(h: cytask.TaskHandle[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": h.task_id, "status": h.status.value, "pid": os.getpid()}
    if h.status is cytask.TaskStatus.SUCCEEDED:
        out["result"] = h.result(timeout=0)
    elif h.status is cytask.TaskStatus.FAILED:
        out["error"] = repr(h.exception(timeout=0))
    return out


def create_app(site_name: str = "example.org") -> Flask:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    app = Flask(__name__)
    app.config["SITE_NAME"] = site_name
    tasks.init_app(app)

    @app.post("/tasks")
    def enqueue() -> dict[str, Any]:
        h = tasks.submit(square, int(request.args.get("n", "0")))
        if request.args.get("wait"):
            h.wait(timeout=30)
            return describe(h)
        return {"id": h.task_id}

    @app.get("/tasks/<int:task_id>")
    def show(task_id: int) -> tuple[dict[str, Any], int]:
        h = tasks.get(task_id)
        return ({"error": "unknown task id"}, 404) if h is None else (describe(h), 200)

    @app.get("/tasks/<int:task_id>/wait")
    def wait(task_id: int) -> tuple[dict[str, Any], int]:
        h = tasks.get(task_id)
        if h is None:
            return {"error": "unknown task id"}, 404
        h.wait(timeout=30)
        return describe(h), 200

    @app.post("/report")
    def make_report() -> dict[str, Any]:
        h = tasks.submit(report, app_context=True)
        h.wait(timeout=30)
        return describe(h)

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    return app


app = create_app()
