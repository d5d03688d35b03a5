"""Durable tasks: a SQLite file, a worker process, a kill -9, a recovery.

No server: ``python examples/durable_demo.py``.  A producer commits 2,000 tasks to
a store in a temporary folder; a ``cytask worker`` process runs them; halfway it is
killed with SIGKILL; a new worker finishes the work, and the tasks the dead worker
held run again once their lease expires.  Every task ends succeeded, exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

from cytask import Engine, current_task, task


@task(name="demo.resize")  # the worker finds it by this name
def resize(image_id: int) -> dict[str, int]:
    time.sleep(0.001)  # the work
    return {"image": image_id, "attempt": current_task().attempt}


def worker(url: str, *extra: str) -> subprocess.Popen[bytes]:
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-m", "cytask", "worker", "durable_demo", "--store", url,
         "--workers", "4", "--lease", "1", "--quiet", *extra],
        env=env,
    )  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/tasks.db"
        producer = Engine(workers=0, store=url)  # a web process: it only enqueues
        handles = producer.submit_many(resize, [(i,) for i in range(2000)])
        print(f"committed {len(handles)} tasks to {url.rpartition('/')[2]}")

        first = worker(url)
        store = producer._durable.store  # type: ignore[union-attr]
        while store.counts()["succeeded"] < 500:
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)  # no drain, no goodbye
        first.wait()
        counts = store.counts()
        print(
            f"worker killed with SIGKILL: {counts['succeeded']} succeeded, "
            f"{counts['running']} left running (leased to the dead worker), "
            f"{counts['pending']} pending"
        )

        second = worker(url, "--burst")  # runs until the store has nothing left
        second.wait(timeout=120)
        results = [h.result(timeout=30) for h in handles]
        again = sum(1 for r in results if r["attempt"] > 1)
        assert [r["image"] for r in results] == list(range(2000))
        print(
            f"recovered: {len(results)}/2000 succeeded; {again} were delivered a second time "
            f"(the dead worker held them: running, or claimed ahead), none lost"
        )
        producer.shutdown()


if __name__ == "__main__":
    main()
