"""What the adversarial store tests share: the task module their workers import, a
``cytask worker`` launcher (its clock skewed if asked), a wait, two scenarios."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TASKS = textwrap.dedent("""
    import os, time
    from cytask import current_task, task

    @task(name="adv.held")
    def held(go: str) -> int:
        me = current_task()
        open(f"{go}.started{me.attempt}", "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(go):
            if time.monotonic() > deadline:
                raise TimeoutError("the test never said go")
            time.sleep(0.005)
        return me.attempt

    @task(name="adv.nap")
    def nap(seconds: float, started: str) -> float:
        open(started, "w").close()
        time.sleep(seconds)
        return seconds

    @task(name="adv.echo")
    def echo(x):
        return x

    @task(name="adv.big")
    def big(n: int) -> str:
        return "x" * n
""")


def until(what: str, check: Callable[[], object], timeout: float = 30.0) -> None:
    """Poll `check` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


def start_worker(
    root: Path, url: str, *extra: str, skew: float | None = None, when: Path | None = None
) -> subprocess.Popen[bytes]:
    """``cytask worker advtasks`` in `root` (stderr to ``root/worker.log``).

    With `skew`, its wall clock (``time.time()``) reads `skew` seconds later, from the
    start or once the file `when` exists: how a clock stepped forward looks to the first
    process that reads it after the step, before the others ran again.
    """
    args = ["worker", "advtasks", "--store", url, "--quiet", *extra]
    if skew is None:
        command = [sys.executable, "-m", "cytask", *args]
    else:
        step = f"({skew!r} if os.path.exists({str(when)!r}) else 0.0)" if when else repr(skew)
        code = (
            "import os, runpy, sys, time\n"
            f"_real = time.time\ntime.time = lambda: _real() + {step}\n"
            "sys.argv = ['cytask', *sys.argv[1:]]\n"
            "runpy.run_module('cytask', run_name='__main__')\n"
        )
        command = [sys.executable, "-c", code, *args]
    with open(root / "worker.log", "ab") as log:  # the child keeps its own copy
        env = dict(os.environ, PYTHONPATH=str(root))
        return subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=log)


def oversized_turn(producer: Any) -> list[Any]:
    """Three ``asubmit`` in one event loop turn, the middle one's arguments ~2 MB:
    (first, big, last) handles or exceptions."""

    async def turn() -> list[Any]:
        return await asyncio.gather(
            producer.asubmit(max, 1, 2),
            producer.asubmit(max, "y" * 2_000_000, "z"),
            producer.asubmit(max, 3, 4),
            return_exceptions=True,
        )

    return asyncio.run(turn())


def release_the_held_task(store: Any, go: Path) -> None:
    """`adv.held` started once (no live lease was taken): let it end, one attempt."""
    assert not Path(f"{go}.started2").exists(), "a live lease was taken"
    go.touch()
    until("the task ended", lambda: store.get("held").terminal)
    rec = store.get("held")
    assert rec is not None and (rec.result, rec.attempts, rec.lost) == ("1", 1, 0)


def kill_workers(*workers: subprocess.Popen[Any] | None) -> None:
    for p in workers:
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(30)


def a_worker_ahead_takes_no_live_lease(root: Path, url: str) -> None:
    """A worker whose wall clock reads a minute ahead joins while another runs a task.

    Its maintenance must run (it expires a result kept 30 s, on its clock 60 s on) and
    leave the running task to its worker: one attempt, nothing lost.
    """
    from cytask._store import SUCCEEDED, Finish, NewTask, open_store

    (root / "advtasks.py").write_text(TASKS)
    go = root / "go"
    store = open_store(url)
    honest = start_worker(root, url, "--workers", "1", "--lease", "1")
    ahead = None
    try:
        payload = json.dumps([[str(go)], {}])
        store.enqueue([NewTask("held", "adv.held", "json", payload, 2, 0.0, 10)])
        until("the honest worker runs the task", Path(f"{go}.started1").exists)
        # a task that ended now: the skewed worker's maintenance expires it (result_ttl
        # 30 s on a clock 60 s ahead), which tells that its maintenance ran
        marker = NewTask("marker", "adv.echo", "json", "[[1], {}]", 2, 0.0, 10)
        store.enqueue([marker], owner="test", lease_until=time.time() + 30)  # no worker's
        assert store.finish("test", [Finish("marker", SUCCEEDED, result="1")], time.time())
        ahead = start_worker(
            root, url, "--workers", "1", "--lease", "1", "--result-ttl", "30", skew=60.0
        )
        until("the skewed worker's maintenance ran", lambda: store.get("marker") is None)
        rec = store.get("held")
        assert rec is not None and rec.status == "running" and rec.attempts == 1, rec
        release_the_held_task(store, go)
    finally:
        kill_workers(honest, ahead)
        store.close()
