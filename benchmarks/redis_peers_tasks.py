"""Tasks for benchmarks/redis_peers.py: the same no-op and 10 ms sleep for every system.

BENCH_SYSTEM picks which system this module defines its tasks for (so a worker imports
only its own library) and BENCH_REDIS_URL names the Redis they all share. Every system
stores each task's result in that Redis (what a result lookup from another process needs):
Celery's Redis result backend, Dramatiq's Results middleware, Huey's and RQ's defaults,
cytask's store. BENCH_CPU=1 adds cytask's compiled CPU-bound task (its compile, or its
load from the cache, happens at import, so only the scaling run's workers pay it).
"""

from __future__ import annotations

import os
import time
from typing import Any

from kernels import pi_lcg

SYSTEM = os.environ.get("BENCH_SYSTEM", "")
URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SLEEP_S = 0.010


def noop_fn(i: int) -> int:
    return i


def sleep_fn(i: int) -> int:
    time.sleep(SLEEP_S)
    return i


noop: Any
sleep10: Any

if SYSTEM == "cytask":
    from cytask import task

    noop = task(name="peers.noop")(noop_fn)
    sleep10 = task(name="peers.sleep")(sleep_fn)

    @task(name="peers.stamp")
    def stamp(submitted: float) -> float:
        return time.time() - submitted  # seconds from submit to start, across processes

    if os.environ.get("BENCH_CPU"):
        # "strict": compiled at import, so no task runs as Python while a worker compiles
        spin = task(name="peers.spin", compile_to_c="strict")(pi_lcg)

elif SYSTEM == "celery":
    from celery import Celery

    app = Celery("redis_peers_tasks", broker=URL, backend=URL)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        redis_max_connections=1_000,  # the result backend's pool, for 200 threads
    )
    noop = app.task(name="peers.noop")(noop_fn)
    sleep10 = app.task(name="peers.sleep")(sleep_fn)

elif SYSTEM == "dramatiq":
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.results import Results
    from dramatiq.results.backends import RedisBackend
    from redis import ConnectionPool, Redis

    # 200 worker threads: redis-py's pool holds 100 connections unless told otherwise
    result_backend = RedisBackend(
        client=Redis(connection_pool=ConnectionPool.from_url(URL, max_connections=1_000))
    )
    broker = RedisBroker(
        client=Redis(connection_pool=ConnectionPool.from_url(URL, max_connections=1_000))
    )
    broker.add_middleware(Results(backend=result_backend))
    dramatiq.set_broker(broker)
    noop = dramatiq.actor(actor_name="peers_noop", store_results=True, max_retries=0)(noop_fn)
    sleep10 = dramatiq.actor(actor_name="peers_sleep", store_results=True, max_retries=0)(sleep_fn)

elif SYSTEM == "huey":
    from huey import RedisHuey
    from redis import ConnectionPool

    # blocking pops: idle workers wait in BRPOP; redis-py's pool holds 100 connections
    # unless told otherwise, fewer than 200 worker threads need
    pool = ConnectionPool.from_url(URL, max_connections=1_000)
    huey = RedisHuey("peers", connection_pool=pool)
    noop = huey.task(name="peers.noop")(noop_fn)
    sleep10 = huey.task(name="peers.sleep")(sleep_fn)

elif SYSTEM in ("rq", "rq-simple"):
    noop = noop_fn  # RQ imports the function by its path
    sleep10 = sleep_fn
