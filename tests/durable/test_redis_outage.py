"""Redis stopped and restarted under a running producer and worker (persistence on).

Producers get a clear error after ``retry_for`` seconds, or wait that long and go
on; workers reconnect on their own; nothing Redis acknowledged is lost.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _redis_server import RedisServer, persistent_server

import cytask
from cytask import StoreError
from cytask._store import SUCCEEDED, open_store

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

TASKS = textwrap.dedent("""
    import time
    from cytask import task

    @task(name="outage.echo")
    def echo(i: int) -> int:
        return i

    @task(name="outage.nap")
    def nap(i: int) -> int:
        time.sleep(0.005)
        return i
""")

PRODUCER = textwrap.dedent("""
    import sys, time
    import cytask, outage
    eng = cytask.Engine(workers=0, store=sys.argv[1])
    for i in range(int(sys.argv[2])):
        h = eng.submit(outage.echo, i)
        sys.stdout.write(h.task_id + "\\n")   # printed only once Redis acknowledged it
        sys.stdout.flush()
        time.sleep(0.001)
    eng.shutdown()
""")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from persistent_server(tmp_path)


def test_a_producer_gets_a_clear_error_after_retry_for(server: RedisServer) -> None:
    eng = cytask.Engine(workers=0, store=server.url("p", retry_for=0.5))
    try:
        assert eng.submit(max, 1, 2).task_id
        server.stop()
        t0 = time.monotonic()
        with pytest.raises(StoreError, match=r"unreachable for 0\.5 s.*retry_for"):
            eng.submit(max, 3, 4)
        assert time.monotonic() - t0 < 10
        server.start()
        h = eng.submit(max, 5, 6)  # the pool reconnects by itself
        assert eng.get(h.task_id) is not None
    finally:
        eng.shutdown()


def test_restart_redis_mid_run_nothing_acknowledged_is_lost(
    server: RedisServer, tmp_path: Path
) -> None:
    (tmp_path / "outage.py").write_text(TASKS)
    (tmp_path / "producer.py").write_text(PRODUCER)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    url = server.url("o", retry_for=60)
    n = 3000
    producer = subprocess.Popen(
        [sys.executable, "producer.py", url, str(n)], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "cytask", "worker", "outage", "--store", url, "--quiet",
             "--workers", "2", "--lease", "2"],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        assert producer.stdout is not None
        ids = [producer.stdout.readline().decode().strip() for _ in range(1000)]
        server.stop()  # SIGTERM: Redis exits; its append-only file has every write
        time.sleep(0.5)  # both sides find it gone meanwhile
        server.start()
        rest, _ = producer.communicate(timeout=120)
        assert producer.returncode == 0
        ids += rest.decode().split()
        assert len(ids) == n
        store = open_store(url)
        try:
            deadline = time.monotonic() + 120
            while store.counts()["succeeded"] < n and time.monotonic() < deadline:
                time.sleep(0.05)
            recs = [store.get(i) for i in ids]
        finally:
            store.close()
        missing = [i for i, r in zip(ids, recs, strict=True) if r is None]
        assert not missing, f"{len(missing)} acknowledged tasks lost"
        assert all(r is not None and r.state == SUCCEEDED for r in recs), (
            tmp_path / "worker.log"
        ).read_text()[-3000:]
        assert [int(r.result) for r in recs if r is not None] == list(range(n))  # type: ignore[arg-type]
        assert worker.poll() is None, "the worker died with Redis"
    finally:
        for p in (producer, worker):
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(30)


def test_a_burst_worker_outlives_an_outage_longer_than_retry_for(
    server: RedisServer, tmp_path: Path
) -> None:
    (tmp_path / "outage.py").write_text(TASKS)
    url = server.url("b", retry_for=0.2)
    producer = cytask.Engine(workers=0, store=url)
    worker = None
    try:
        spec = importlib.util.spec_from_file_location("outage", tmp_path / "outage.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        handles = producer.submit_many(mod.nap, [(i,) for i in range(400)])  # ~1 s of work
        worker = subprocess.Popen(
            [sys.executable, "-m", "cytask", "worker", "outage", "--store", url, "--quiet",
             "--burst", "--workers", "2"],
            cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(tmp_path)),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        store = producer._durable.store  # type: ignore[union-attr]
        while store.counts()["succeeded"] < 20:
            assert worker.poll() is None, worker.communicate()[1].decode()
            time.sleep(0.005)
        server.stop()
        with pytest.raises(subprocess.TimeoutExpired):
            worker.wait(2.0)  # ten times retry_for: still waiting for Redis, not dead
        server.start()
        _, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err.decode()[-2000:]
        assert b"will retry" in err  # the outage was reported, not silent
        assert [h.result(timeout=10) for h in handles] == list(range(400))
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.communicate()
        producer.shutdown()
