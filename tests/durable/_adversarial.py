"""What the adversarial store tests share: the task module their workers import, a wait."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable

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
