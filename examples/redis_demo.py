"""Many workers on Redis: two worker processes, a kill -9, a Redis restart.

``python examples/redis_demo.py`` (needs ``pip install 'cytask[redis]'`` and a
``redis-server`` binary: ``apt-get install redis-server``).  It starts a private
Redis with its append-only file on; a producer commits 3,000 tasks; two
``cytask worker`` processes share them; one is killed with SIGKILL mid-run, and
Redis itself is stopped and started again.  Every task ends succeeded; only tasks
the dead worker held run a second time.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from cytask import Engine, current_task, task

TASKS = 3000


@task(name="redisdemo.thumbnail")  # the workers find it by this name
def thumbnail(image_id: int) -> dict[str, int]:
    time.sleep(0.002)  # the work
    return {"image": image_id, "attempt": current_task().attempt}


class Redis:
    """A private redis-server on a free port, append-only file on."""

    def __init__(self, folder: str) -> None:
        binary = shutil.which("redis-server") or shutil.which("valkey-server")
        if binary is None:
            sys.exit("redis_demo: no redis-server found (apt-get install redis-server)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", folder,
                     "--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL)
        for _ in range(500):  # ready once it accepts a connection
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.01)
        sys.exit("redis_demo: redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: Redis writes its append-only file and exits
            self.proc.wait(30)
            self.proc = None


def worker(url: str, *extra: str) -> subprocess.Popen[bytes]:
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-m", "cytask", "worker", "redis_demo", "--store", url,
         "--workers", "4", "--lease", "1", "--quiet", *extra],
        env=env,
    )  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        redis = Redis(folder)
        redis.start()
        workers: list[subprocess.Popen[bytes]] = []
        try:
            url = f"redis://127.0.0.1:{redis.port}/0?retry_for=30"
            producer = Engine(workers=0, store=url)  # a web process: it only enqueues
            handles = producer.submit_many(thumbnail, [(i,) for i in range(TASKS)])
            print(f"committed {len(handles)} tasks to Redis on port {redis.port}")
            workers = [worker(url), worker(url)]
            store = producer._durable.store  # type: ignore[union-attr]
            while store.counts()["succeeded"] < TASKS // 4:
                time.sleep(0.01)
            workers[0].send_signal(signal.SIGKILL)  # no drain, no goodbye
            workers[0].wait()
            print(f"worker 1 killed with SIGKILL at {store.counts()['succeeded']} succeeded")
            while store.counts()["succeeded"] < TASKS // 2:
                time.sleep(0.01)
            redis.stop()
            print("Redis stopped; the surviving worker waits for it")
            time.sleep(0.5)
            redis.start()
            print("Redis started again from its append-only file")
            results = [h.result(timeout=120) for h in handles]
            assert [r["image"] for r in results] == list(range(TASKS))
            again = sum(1 for r in results if r["attempt"] > 1)
            print(
                f"done: {len(results)}/{TASKS} succeeded; {again} ran a second time (the dead "
                f"worker held them), none lost"
            )
            producer.shutdown()
        finally:
            for w in workers:
                if w.poll() is None:
                    w.send_signal(signal.SIGTERM)
                    w.wait(60)
            redis.stop()


if __name__ == "__main__":
    main()
