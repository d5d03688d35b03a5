"""Redis stopped and restarted under a running producer and worker (persistence on).

Producers get a clear error after ``retry_for`` seconds, or wait that long and go
on; workers reconnect on their own; nothing Redis acknowledged is lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RedisServer

import cytask
from cytask import StoreError
from cytask._store import SUCCEEDED, open_store

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

TASKS = textwrap.dedent("""
    from cytask import task

    @task(name="outage.echo")
    def echo(i: int) -> int:
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
    folder = tmp_path / "redis"
    folder.mkdir()
    s = RedisServer(str(folder), persist=True)
    s.start()
    try:
        yield s
    finally:
        s.stop(kill=True)


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
