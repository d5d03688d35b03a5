"""Group commit: producers waiting for a commit share the next one, and a producer
interrupted while it waits neither loses the others' rows nor stalls them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

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
    rt._committing = True
    batch.waiters.append(theirs)  # ``mine`` was popped: the role is ours
    rt._stop_waiting(batch, mine)
    assert theirs.acquire(blocking=False), "the next producer was not woken to commit"
    assert rt._committing
    rt._stop_waiting(batch, theirs)  # it too is interrupted, nobody else waits
    assert not rt._committing
    assert isinstance(rt._batch, _Batch)
    producer.submit(add, 1, 1)  # the next producer commits the open batch itself
