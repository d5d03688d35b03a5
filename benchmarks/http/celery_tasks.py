"""The Celery side of benchmarks/http/run.py: a no-op that counts its runs in Redis.

The broker is the private redis-server that run.py starts (BENCH_CELERY_BROKER); run.py
also starts the worker: ``celery -A celery_tasks worker --pool threads -c 8``.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

BROKER = os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/0")
RAN_KEY = "bench:http:celery:ran"

app = Celery("bench_http", broker=BROKER)
app.conf.task_ignore_result = True  # the endpoints answer with the id, as cytask's do
counter = redis.Redis.from_url(BROKER)


@app.task(name="bench.http.noop")
def noop() -> None:
    counter.incr(RAN_KEY)


def ran() -> int:
    return int(counter.get(RAN_KEY) or 0)


def reset() -> None:
    counter.delete(RAN_KEY)
