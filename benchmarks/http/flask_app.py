"""Flask endpoints of benchmarks/http/run.py (served by gunicorn, one process).

/ceiling enqueues nothing; /cytask submits a no-op through ``cytask.contrib.flask``
(``gil_share=0.2``); /count says how many tasks were accepted and how many ran.
"""

from __future__ import annotations

import itertools
import os

from flask import Flask

from cytask.contrib.flask import Cytask

ids = itertools.count(1)
accepted = {"cytask": itertools.count()}
ran = {"cytask": itertools.count()}
tasks = Cytask(workers=int(os.environ.get("BENCH_WORKERS", "1")))


def noop(kind: str) -> None:
    next(ran[kind])


def value(counter: itertools.count[int]) -> int:
    return int(repr(counter)[6:-1])


def create_app() -> Flask:
    app = Flask(__name__)
    tasks.init_app(app)

    @app.get("/ceiling")
    def ceiling() -> dict[str, int]:
        return {"id": next(ids)}

    @app.get("/cytask")
    def with_cytask() -> dict[str, int]:
        next(accepted["cytask"])
        return {"id": tasks.submit(noop, "cytask").task_id}

    @app.get("/count")
    def count() -> dict[str, dict[str, int]]:
        return {k: {"accepted": value(accepted[k]), "ran": value(ran[k])} for k in accepted}

    return app
