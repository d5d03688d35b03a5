"""Group commit: producers waiting for a commit share the next one, and a producer
interrupted while it waits neither loses the others' rows nor stalls them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import cytask
from cytask import Engine
from cytask._durable import _Batch
from cytask._store import NewTask, open_store


def add(x: int, y: int) -> int:
    return x + y


def _wait_for(what: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.001)


@pytest.fixture
def producer(tmp_path: Path) -> Iterator[Engine]:
    eng = Engine(workers=0, store=f"sqlite:///{tmp_path}/tasks.db")
    yield eng
    eng.shutdown()


class _HeldStore:
    """Wraps the engine's store: the first enqueue blocks until ``release`` is set."""

    def __init__(self, eng: Engine) -> None:
        self.rt: Any = eng._durable
        self.store = self.rt.store
        self.sizes: list[int] = []
        self.in_commit = threading.Event()
        self.release = threading.Event()
        inner = self.store.enqueue

        def enqueue(tasks: list[NewTask], **kw: Any) -> None:
            self.sizes.append(len(tasks))
            if len(self.sizes) == 1:
                self.in_commit.set()
                self.release.wait(30)
            inner(tasks, **kw)

        self.store.enqueue = enqueue

    def waiting(self) -> int:
        return len(self.rt._batch.waiters)


def test_producers_waiting_for_a_commit_share_the_next_one(producer: Engine) -> None:
    held = _HeldStore(producer)
    first = threading.Thread(target=producer.submit, args=(add, 0, 0))
    first.start()
    assert held.in_commit.wait(30)
    handles: list[Any] = []
    others = [
        threading.Thread(target=lambda i=i: handles.append(producer.submit(add, i, 1)))
        for i in range(7)
    ]
    for t in others:
        t.start()
    _wait_for(lambda: held.waiting() == 7)
    held.release.set()
    for t in [first, *others]:
        t.join(30)
    assert held.sizes == [1, 7]
    store = open_store(producer._durable.store.url)  # type: ignore[union-attr]
    try:
        assert store.counts()["pending"] == 8
        assert all(store.get(h.task_id) is not None for h in handles)
    finally:
        store.close()


def test_a_lone_producer_commits_at_once(producer: Engine) -> None:
    held = _HeldStore(producer)
    held.release.set()
    for i in range(20):
        producer.submit(add, i, 1)
    assert held.sizes == [1] * 20


def test_an_interrupted_waiter_leaves_its_row_to_the_next_commit(tmp_path: Path) -> None:
    """Ctrl-C in the main thread while it waits for another thread's commit: the main
    thread raises KeyboardInterrupt at once, the producer behind it still gets its
    commit, and the engine goes on committing (in a subprocess: the failure is a hang)."""
    script = textwrap.dedent(
        f"""
        import signal, sys, threading, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_group_commit import _HeldStore, _wait_for, add
        from cytask import Engine
        from cytask._store import open_store

        url = "sqlite:///{tmp_path}/tasks.db"
        eng = Engine(workers=0, store=url)
        held = _HeldStore(eng)
        first = threading.Thread(target=eng.submit, args=(add, 0, 0))
        first.start()
        assert held.in_commit.wait(30)
        behind = []
        main = threading.main_thread().ident

        def interrupt():
            _wait_for(lambda: held.waiting() == 1)  # the main thread waits
            t = threading.Thread(target=lambda: behind.append(eng.submit(add, 2, 2)))
            t.start()
            _wait_for(lambda: held.waiting() == 2)
            signal.pthread_kill(main, signal.SIGINT)
            t.join(30)

        helper = threading.Thread(target=interrupt)
        helper.start()
        try:
            eng.submit(add, 1, 1)
        except KeyboardInterrupt:
            print("interrupted")
        assert held.waiting() == 1, held.waiting()  # only the producer behind it
        held.release.set()
        helper.join(30)
        first.join(30)
        assert behind, "the producer behind the interrupted one never returned"
        eng.submit(add, 3, 3)  # the committer's role was handed on, not lost
        store = open_store(url)
        print("pending", store.counts()["pending"])
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # the interrupted row was in the open batch: it was committed with the one behind it
    assert out.stdout.split() == ["interrupted", "pending", "4"]


def test_an_interrupted_successor_hands_the_commit_on(producer: Engine) -> None:
    """A producer handed the committer's role, interrupted before it could commit,
    passes the role to the next producer asleep on the batch, or gives it up."""
    rt: Any = producer._durable
    mine, theirs = threading.Lock(), threading.Lock()
    mine.acquire()
    theirs.acquire()
    batch = rt._batch
    rt._committer = mine
    batch.waiters.append(theirs)  # ``mine`` was popped: the role is ours
    rt._stop_waiting(batch, mine)
    assert theirs.acquire(blocking=False), "the next producer was not woken to commit"
    assert rt._committer is theirs
    rt._stop_waiting(batch, theirs)  # it too is interrupted, nobody else waits
    assert rt._committer is None
    assert isinstance(rt._batch, _Batch)
    producer.submit(add, 1, 1)  # the next producer commits the open batch itself


def _enqueue_sizes(eng: Engine) -> list[int]:
    store: Any = eng._durable.store  # type: ignore[union-attr]
    sizes: list[int] = []
    inner = store.enqueue

    def enqueue(tasks: list[NewTask], **kw: Any) -> None:
        sizes.append(len(tasks))
        inner(tasks, **kw)

    store.enqueue = enqueue
    return sizes


def test_asubmit_commits_one_loop_turn_in_one_commit(url: str) -> None:
    # An endpoint awaiting asubmit: the requests an event loop serves in one turn share
    # one commit, and each asubmit returns once its task is committed
    eng = Engine(workers=0, store=url)
    try:
        sizes = _enqueue_sizes(eng)

        async def requests() -> list[Any]:
            return list(await asyncio.gather(*(eng.asubmit(add, i, 1) for i in range(50))))

        handles = asyncio.run(requests())
        assert sizes == [50]
        store = open_store(url)
        try:
            assert all(store.get(h.task_id) is not None for h in handles)
        finally:
            store.close()
    finally:
        eng.shutdown()


@cytask.task(name="tests.group_commit.double")
def double(x: int) -> int:
    return 2 * x


def test_asubmit_runs_here_and_a_cancelled_request_leaks_nothing(url: str) -> None:
    eng = Engine(workers=2, store=url)

    async def main() -> tuple[list[int], Any]:
        hs = await asyncio.gather(*(eng.asubmit(add, i, i) for i in range(20)))
        via_task = await eng.asubmit(double, 21)
        waiting = asyncio.ensure_future(eng.asubmit(add, 100, 1))
        await asyncio.sleep(0)  # its row is in this turn's batch, the commit scheduled
        assert not waiting.done()
        waiting.cancel()  # the request goes away before the commit
        await asyncio.sleep(0)  # its batch goes to the commit thread all the same
        return [h.result(timeout=30) for h in hs], via_task.result(timeout=30)

    try:
        results, doubled = asyncio.run(main())
        assert results == [2 * i for i in range(20)]
        assert doubled == 42
        rt: Any = eng._durable
        deadline = time.monotonic() + 30  # committed off the loop: maybe not yet
        while _stored_count(url) < 22 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _stored_count(url) == 22  # the cancelled request's task was committed too
        while rt._held and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rt._held == 0, "a lease taken for the cancelled request was never given back"
    finally:
        eng.shutdown(wait=True, timeout=30)


def _stored_count(url: str) -> int:
    store = open_store(url)
    try:
        return sum(store.counts().values())
    finally:
        store.close()


def test_asubmit_failures_reach_every_request(tmp_path: Path) -> None:
    eng = Engine(workers=0, store=f"sqlite:///{tmp_path}/tasks.db")
    eng._durable.store.close()  # type: ignore[union-attr]  # every commit now fails

    async def main() -> list[Any]:
        calls = [eng.asubmit(add, i, 1) for i in range(3)]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    errors = asyncio.run(main())
    assert [type(e).__name__ for e in errors] == ["StoreError"] * 3
    assert all("closed" in str(e) for e in errors)
    eng.shutdown()


def test_asubmit_with_the_memory_store_is_submit_and_adelay_too() -> None:
    eng = Engine(workers=1)
    plus = cytask.task(engine=eng)(add)
    try:

        async def main() -> tuple[int, int]:
            h = await eng.asubmit(add, 2, 3)
            t = await plus.adelay(4, 5)
            return int(await h), int(await t)

        assert asyncio.run(main()) == (5, 9)
    finally:
        eng.shutdown()


def _shut_down_during_commit(eng: Engine) -> None:
    """The engine's next commit shuts the engine down once its rows are stored:
    shutdown() in another thread racing a submit, at its worst moment."""
    store: Any = eng._durable.store  # type: ignore[union-attr]
    inner = store.enqueue

    def enqueue(tasks: list[NewTask], **kw: Any) -> None:
        inner(tasks, **kw)
        store.enqueue = inner
        eng.shutdown(wait=False)

    store.enqueue = enqueue


def test_asubmit_racing_shutdown_never_hangs(url: str) -> None:
    # shutdown() between the requests and their commit: each raises EngineClosed and
    # nothing is stored; shutdown() during the commit: the rows are stored, each request
    # gets its handle, and the tasks it could not start here wait READY in the store
    # (before: the loop's commit callback raised EngineClosed and every request hung)
    eng = Engine(workers=2, store=url)

    async def before_commit() -> list[Any]:
        calls = [asyncio.ensure_future(eng.asubmit(add, i, 1)) for i in range(3)]
        await asyncio.sleep(0)  # their rows wait for this turn's commit
        eng.shutdown(wait=False)
        _, pending = await asyncio.wait(calls, timeout=30)
        assert not pending, "a request never returned"
        return [c.exception() for c in calls]

    errors = asyncio.run(before_commit())
    assert [type(e).__name__ for e in errors] == ["EngineClosed"] * 3
    assert "shut down before this task was committed" in str(errors[0])
    eng.shutdown(wait=True, timeout=30)
    assert _stored_count(url) == 0

    eng = Engine(workers=2, store=url)
    _shut_down_during_commit(eng)

    async def during_commit() -> list[Any]:
        calls = [asyncio.ensure_future(eng.asubmit(add, i, 1)) for i in range(3)]
        _, pending = await asyncio.wait(calls, timeout=30)
        assert not pending, "a request never returned"
        return [c.result() for c in calls]

    handles = asyncio.run(during_commit())
    eng.shutdown(wait=True, timeout=30)
    _assert_ready_in_store(url, [h.task_id for h in handles])


def test_submit_many_racing_shutdown_gives_its_rows_back(url: str) -> None:
    # The rows were committed leased to this process; the engine closed before they
    # were started: the caller gets its handles (the rows are stored) and every row is
    # READY for another worker at once (before: EngineClosed for rows already stored,
    # and the rows after the first stayed leased to a process that never ran them)
    eng = Engine(workers=2, store=url)
    _shut_down_during_commit(eng)
    handles = eng.submit_many(add, [(i, 1) for i in range(5)])
    eng.shutdown(wait=True, timeout=30)
    _assert_ready_in_store(url, [h.task_id for h in handles])


def _assert_ready_in_store(url: str, ids: list[str]) -> None:
    store = open_store(url)
    try:
        assert store.counts()["pending"] == len(ids)
        claimed = store.claim("another-worker", 10, time.time() + 30)
        assert sorted(c.id for c in claimed) == sorted(ids)
    finally:
        store.close()


def test_a_loop_closed_before_its_commit_holds_no_lease(url: str) -> None:
    # An event loop stopped and closed in the turn a request was made: its commit never
    # runs.  Before, the request had taken a lease slot for good: after max_inflight
    # such loops the engine could neither run its own tasks nor claim any (a hang)
    eng = Engine(workers=1, store=url)
    try:
        rt: Any = eng._durable
        for _ in range(rt.max_inflight + 1):
            loop = asyncio.new_event_loop()
            request = loop.create_task(eng.asubmit(add, 1, 1))
            loop.call_soon(loop.stop)  # runs in the request's first turn, before the commit
            loop.run_forever()
            assert not request.done()
            loop.set_exception_handler(lambda *_: None)  # it dies with its loop: no log
            loop.close()
        assert eng.submit(add, 2, 3).result(timeout=30) == 5
        assert len(rt._loop_batches) <= 1, "the closed loops' batches were kept"
    finally:
        eng.shutdown(wait=True, timeout=30)


_SIGNAL_AT_EVERY_POINT = """
import asyncio, sys, threading
sys.path.insert(0, {here!r})
from test_group_commit import _HeldStore, _wait_for, add
import cytask._durable
from cytask import Engine
from cytask._store import StoreError

SOURCE = cytask._durable.__file__


class Interrupt:
    # A profile function raising KeyboardInterrupt at the k-th point of the main thread
    # where CPython runs a signal handler: a Python function's first instruction
    # ("call") and the return of a C function ("c_return"), in cytask/_durable.py
    def __init__(self, k):
        self.k, self.seen, self.fired = k, 0, False

    def __call__(self, frame, event, arg):
        if frame.f_code.co_filename != SOURCE or event not in ("call", "c_return"):
            return
        if event == "call" and frame.f_code.co_name == "_flush_loop_batch":
            return  # the one point not covered: a signal before the loop's commit begins
        if self.seen == self.k:
            self.fired = True
            sys.setprofile(None)
            raise KeyboardInterrupt
        self.seen += 1


def submit_interrupted_at(k):
    p = Interrupt(k)
    sys.setprofile(p)
    try:
        eng.submit(add, 1, 1)
    except KeyboardInterrupt:
        pass
    finally:
        sys.setprofile(None)
    return p


def check(what, k):
    # the next producer commits (the committer's role was not lost), and nothing the
    # interrupted one took is kept: no lease, no arrival a committer would wait for
    t = threading.Thread(target=eng.submit, args=(add, 5, 5), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), f"{{what}}, signal at point {{k}}: the next submit hung"
    _wait_for(lambda: rt._held == 0, 10)
    assert rt._arriving == 0, (what, k)


eng = Engine(workers=1, store="sqlite:///{tmp}/tasks.db")
rt = eng._durable
k = 0
while True:  # a lone producer: it commits its own row and starts its task
    p = submit_interrupted_at(k)
    check("alone", k)
    if not p.fired:
        break
    k += 1
alone = k
k = 0
while True:  # a waiting producer, handed the committer's role with one behind it
    held = _HeldStore(eng)
    first = threading.Thread(target=eng.submit, args=(add, 0, 0))
    first.start()
    assert held.in_commit.wait(10)
    behind = []

    def producer_behind():
        try:
            behind.append(eng.submit(add, 2, 2))
        except StoreError as exc:  # its batch was taken by the interrupted committer
            assert "interrupted" in str(exc), exc
            behind.append(exc)

    t = threading.Thread(target=producer_behind)
    t.start()
    _wait_for(lambda: held.waiting() == 1)
    p = Interrupt(k)

    def release():
        _wait_for(lambda: held.waiting() == 2 or p.fired)  # main asleep behind it
        held.release.set()

    r = threading.Thread(target=release)
    r.start()
    sys.setprofile(p)
    try:
        eng.submit(add, 1, 1)
    except KeyboardInterrupt:
        pass
    finally:
        sys.setprofile(None)
    held.release.set()
    for th in (first, t, r):
        th.join(10)
    assert behind, f"successor, signal at point {{k}}: the producer behind it hung"
    del held.store.enqueue  # the store's own again
    check("successor", k)
    if not p.fired:
        break
    k += 1
successor = k
k = 0
while True:  # requests on an event loop (run here, without asyncio.run's Ctrl-C handler)
    loop = asyncio.new_event_loop()
    requests = [loop.create_task(eng.asubmit(add, i, 1)) for i in range(3)]
    p = Interrupt(k)
    sys.setprofile(p)
    try:
        loop.run_until_complete(asyncio.wait(requests, timeout=10))
    except KeyboardInterrupt:
        pass
    finally:
        sys.setprofile(None)
    loop.run_until_complete(asyncio.wait(requests, timeout=10))  # the app goes on
    assert all(r.done() for r in requests), f"on a loop, signal at point {{k}}: a request hung"
    assert loop not in rt._loop_batches, k
    loop.close()
    check("on a loop", k)
    if not p.fired:
        break
    k += 1
print(alone, successor, k)
"""


def _own_failure(stderr: str) -> str:
    """The script's failure, which the interrupted requests' tracebacks (printed as
    their tasks are collected at exit) push out of the tail."""
    lines = stderr.splitlines()
    own = [i for i, line in enumerate(lines) if line.startswith(("AssertionError", "Fatal"))]
    context = [line for i in own for line in lines[max(0, i - 12) : i + 1]]
    return "\n".join([*context, "... (the end:)", *lines[-25:]])


def test_a_signal_at_any_point_of_a_submit_stalls_nothing(tmp_path: Path) -> None:
    """KeyboardInterrupt raised in the main thread at each point of ``submit`` (and of
    ``asubmit`` and its loop's commit) where a signal handler can run, in turn.
    Before, a signal just after a producer took the committer's role (or before it
    woke the producers asleep on its batch) left that role taken for good: every
    later submit of the process hung.  Others leaked a lease or an arrival (each
    later commit then waited 0.5 ms for nobody), or left a loop's requests waiting
    for a commit that never came."""
    script = _SIGNAL_AT_EVERY_POINT.format(here=str(Path(__file__).parent), tmp=tmp_path)
    out = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", script],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, _own_failure(out.stderr)
    alone, successor, on_a_loop = map(int, out.stdout.split())
    assert min(alone, successor, on_a_loop) > 20  # the points were reached, not skipped
