"""``asubmit`` commits off the event loop's thread: a store that makes its commit wait
(an SQLite file another process holds locked, Redis stopped) stalls the requests
that wait for it, never the loop (its other requests, its health checks)."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _redis_server import RedisServer, persistent_server

from cytask import Engine
from cytask._store import open_store


def add(x: int, y: int) -> int:
    return x + y


def _stored(url: str, n: int) -> int:
    """How many tasks the store holds, once it holds `n` (or after 30 s): the request
    that gave up may have been committed after the other (its row reached the
    commit thread a turn later)."""
    store = open_store(url)
    try:
        deadline = time.monotonic() + 30
        while True:
            found = sum(store.counts().values())
            if found >= n or time.monotonic() > deadline:
                return found
            time.sleep(0.01)
    finally:
        store.close()


def _loop_runs_while_the_commit_waits(eng: Engine, release: threading.Event) -> list[Any]:
    """Requests wait for a commit the store holds up; a loop callback must run
    meanwhile (before: the loop was stuck in the commit, the callback ran after it
    ended), and a request that stops waiting (wait_for) ends at its timeout.
    `release` lets the store go once both happened (or at the latest after 60 s)."""

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        request = asyncio.ensure_future(eng.asubmit(add, 1, 2))
        impatient = asyncio.ensure_future(asyncio.wait_for(eng.asubmit(add, 3, 4), 0.05))
        await asyncio.sleep(0)  # both rows in this turn's batch, its commit scheduled
        ran = asyncio.Event()
        pending_when_ran: list[bool] = []

        def health_check() -> None:  # any other work of the loop: a request, a probe
            pending_when_ran.append(not request.done())
            ran.set()

        loop.call_soon(health_check)
        await ran.wait()
        try:
            timed_out = await impatient  # a request that gives up is not held up either
        except TimeoutError:
            timed_out = "timed out"
        release.set()
        handle = await asyncio.wait_for(request, 60)
        return [pending_when_ran, timed_out, handle]

    return asyncio.run(main())


def test_a_locked_sqlite_file_does_not_stall_the_loop(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/tasks.db"
    eng = Engine(workers=1, store=url)  # runs its own tasks: leases are held and given
    rt: Any = eng._durable
    blocker = sqlite3.connect(f"{tmp_path}/tasks.db", isolation_level=None, check_same_thread=False)
    release = threading.Event()
    try:
        eng.submit(add, 0, 0).result(timeout=30)
        blocker.execute("BEGIN IMMEDIATE")  # another process's write transaction

        def let_go() -> None:
            release.wait(60)
            blocker.execute("COMMIT")

        holder = threading.Thread(target=let_go)
        holder.start()
        try:
            pending_when_ran, timed_out, handle = _loop_runs_while_the_commit_waits(eng, release)
        finally:
            release.set()
            holder.join(60)
        assert pending_when_ran == [True], "the loop ran nothing while the commit waited"
        assert timed_out == "timed out"
        assert handle.result(timeout=30) == 3
        # the task of the request that gave up was committed too, and ran here
        assert _stored(url, 3) == 3
        deadline = time.monotonic() + 30
        while rt._held and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rt._held == 0, "a lease of the batch was never given back"
    finally:
        blocker.close()
        eng.shutdown(wait=True, timeout=30)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from persistent_server(tmp_path)


def test_redis_stopped_does_not_stall_the_loop(server: RedisServer) -> None:
    url = server.url("aio", retry_for=10)
    eng = Engine(workers=0, store=url)
    release = threading.Event()
    try:
        eng.submit(add, 0, 0)  # connected
        server.stop()

        def restart() -> None:
            release.wait(60)
            server.start()

        starter = threading.Thread(target=restart)
        starter.start()
        try:
            pending_when_ran, timed_out, handle = _loop_runs_while_the_commit_waits(eng, release)
        finally:
            release.set()
            starter.join(60)
        assert pending_when_ran == [True], "the loop ran nothing while Redis was away"
        assert timed_out == "timed out"
        assert eng.get(handle.task_id) is not None
        assert _stored(url, 3) == 3
    finally:
        eng.shutdown(wait=True, timeout=30)


_SIGNAL_DURING_COMMIT = """
import asyncio, signal, sqlite3, sys, threading, time
sys.path[:0] = [{here!r}, {tests!r}]
from test_aio_commit import add
from cytask import Engine
from cytask._store import open_store

url = "sqlite:///{tmp}/tasks.db"
eng = Engine(workers=1, store=url)
rt = eng._durable
eng.submit(add, 0, 0).result(timeout=30)
blocker = sqlite3.connect("{tmp}/tasks.db", isolation_level=None)
blocker.execute("BEGIN IMMEDIATE")
main = threading.main_thread().ident


def committing():  # the commit thread took the loop's batch: its commit waits
    return rt._aio_thread is not None and not rt._aio_todo and not rt._loop_batches


def interrupt():
    deadline = time.monotonic() + 30
    while not committing() and time.monotonic() < deadline:
        time.sleep(0.001)
    signal.pthread_kill(main, signal.SIGINT)


# a loop run without asyncio.run's Ctrl-C handler: SIGINT raises on its thread
loop = asyncio.new_event_loop()
requests = [loop.create_task(eng.asubmit(add, i, 1)) for i in range(3)]
threading.Thread(target=interrupt).start()
try:
    loop.run_until_complete(asyncio.wait(requests, timeout=30))
    print("not interrupted")
except KeyboardInterrupt:
    print("interrupted")
assert not any(r.done() for r in requests)
blocker.execute("COMMIT")  # the commit goes in; the app goes on
{after}
"""

_RESUMED = """
loop.run_until_complete(asyncio.wait(requests, timeout=30))
results = sorted(r.result().result(timeout=30) for r in requests)
print("results", *results)
"""

_CLOSED = """
loop.set_exception_handler(lambda *_: None)  # its requests die with it: no log
loop.close()  # before the commit ended: its wake-up finds the loop closed
eng.submit(add, 9, 9).result(timeout=30)  # the commit thread goes on
"""

_CHECK = """
deadline = time.monotonic() + 30
while rt._held and time.monotonic() < deadline:
    time.sleep(0.01)
print("held", rt._held)
store = open_store(url)
print("stored", sum(store.counts().values()), "succeeded", store.counts()["succeeded"])
eng.shutdown(wait=True, timeout=30)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("after", ["resumed", "closed"])
def test_a_signal_on_the_loop_while_its_commit_runs_loses_nothing(
    tmp_path: Path, after: str
) -> None:
    """Ctrl-C on the loop's thread while the commit thread commits its batch: the
    commit goes in once, its tasks run once here, no lease stays held; resumed, the
    loop's requests get their handles; closed, they die with it (before the commit
    ran on the loop, which the signal interrupted)."""
    body = (_RESUMED if after == "resumed" else _CLOSED) + _CHECK
    script = _SIGNAL_DURING_COMMIT.format(
        here=str(Path(__file__).parent),
        tests=str(Path(__file__).parent.parent),
        tmp=tmp_path,
        after=body,
    )
    out = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr == "", out.stderr[-3000:]  # nothing logged: no error in a callback
    lines = out.stdout.splitlines()
    assert lines[0] == "interrupted"
    if after == "resumed":
        assert lines[1:] == ["results 1 2 3", "held 0", "stored 4 succeeded 4"]
    else:
        assert lines[1:] == ["held 0", "stored 5 succeeded 5"]


_DROPPED = """
import asyncio, gc, sys, time, weakref
from cytask import Engine

eng = Engine(workers=0, store="sqlite:///{tmp}/tasks.db")


async def request(e):
    return (await e.asubmit(max, 1, 2)).task_id


assert asyncio.run(request(eng))
thread = eng._durable._aio_thread
assert thread is not None
ref = weakref.ref(eng)
del eng
deadline = time.monotonic() + 30
while ref() is not None and time.monotonic() < deadline:
    gc.collect()
    time.sleep(0.01)
print("kept" if ref() is not None else "collected")
thread.join(30)
print("stayed" if thread.is_alive() else "left")
"""


def test_a_dropped_engine_that_used_asubmit_is_collected(tmp_path: Path) -> None:
    # The commit thread holds its engine weakly between batches, and leaves once idle
    # (or once its engine is gone): a producer dropped without shutdown() is collected
    # (in a subprocess: the collection of its own engine only)
    out = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", _DROPPED.format(tmp=tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["collected", "left"]
