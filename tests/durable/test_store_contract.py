"""What every store promises (``cytask._store.Store``), on SQLite and on Redis alike.

Each test runs once per store: a file on disk, and a real redis-server (a prefix of
the test's own).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cytask import StoreError
from cytask._store import (
    FAILED,
    READY,
    RETRYING,
    RUNNING,
    SCHEDULED,
    SUCCEEDED,
    Finish,
    NewTask,
    Store,
    open_store,
)


def _new(i: int, *, run_at: float = 0.0, priority: int = 2, max_lost: int = 10) -> NewTask:
    return NewTask(f"id{i:05d}", "mod.fn", "json", "[[],{}]", priority, run_at, max_lost)


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    s = open_store(url)
    yield s
    s.close()


def test_claim_is_priority_then_fifo_and_leased_once(store: Store) -> None:
    store.enqueue([_new(1, priority=3), _new(2), _new(3, priority=0), _new(4)])
    got = store.claim("a", 3, time.time() + 30)
    assert [c.id for c in got] == ["id00003", "id00002", "id00004"]
    assert all(c.attempts == 1 for c in got)
    assert [c.id for c in store.claim("b", 10, time.time() + 30)] == ["id00001"]
    assert store.claim("c", 10, time.time() + 30) == []
    rec = store.get("id00003")
    assert rec is not None and rec.state == RUNNING and rec.owner == "a"


def test_concurrent_claims_never_overlap(url: str) -> None:
    first = open_store(url)
    first.enqueue([_new(i) for i in range(2000)])
    seen: list[list[str]] = []
    barrier = threading.Barrier(4)

    def claimer(k: int) -> None:
        s = open_store(url)  # a connection of its own, as another process would have
        mine: list[str] = []
        barrier.wait()
        while batch := s.claim(f"w{k}", 37, time.time() + 30):
            mine += [c.id for c in batch]
        seen.append(mine)
        s.close()

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids = [i for mine in seen for i in mine]
    assert len(ids) == 2000 and len(set(ids)) == 2000
    first.close()


def test_finish_checks_the_owner(store: Store) -> None:
    store.enqueue([_new(1), _new(2)])
    store.claim("a", 2, time.time() + 30)
    done = store.finish(
        "a", [Finish("id00001", SUCCEEDED, result="3"), Finish("id00002", FAILED, error="{}")], 1.0
    )
    assert done == 2
    assert store.finish("a", [Finish("id00001", SUCCEEDED, result="4")], 2.0) == 0  # once
    rec = store.get("id00001")
    assert rec is not None and rec.state == SUCCEEDED and rec.result == "3" and rec.terminal


def test_expired_lease_runs_again_and_a_late_result_is_dropped(store: Store) -> None:
    store.enqueue([_new(1)])
    store.claim("dead", 1, time.time() - 1)  # a lease already past: its worker died
    assert store.recover_expired(time.time()) == 1
    again = store.claim("alive", 1, time.time() + 30)
    assert [(c.id, c.attempts, c.lost) for c in again] == [("id00001", 2, 1)]
    # the dead worker's result (if it was only slow) must not overwrite the new run
    assert store.finish("dead", [Finish("id00001", SUCCEEDED, result="1")], 1.0) == 0
    assert store.finish("alive", [Finish("id00001", SUCCEEDED, result="2")], 1.0) == 1
    rec = store.get("id00001")
    assert rec is not None and rec.result == "2" and rec.attempts == 2


def test_a_task_that_keeps_killing_its_worker_fails(store: Store) -> None:
    store.enqueue([_new(1, max_lost=2)])
    for _ in range(2):
        store.claim("w", 1, time.time() - 1)
        store.recover_expired(time.time())
    rec = store.get("id00001")
    assert rec is not None and rec.state == FAILED
    assert rec.error is not None and "WorkerLost" in rec.error and "2 times" in rec.error


def test_extend_keeps_a_lease(store: Store) -> None:
    store.enqueue([_new(1)])
    store.claim("w", 1, time.time() + 0.01)
    assert store.extend("w", ["id00001"], time.time() + 30) == 1
    assert store.extend("other", ["id00001"], time.time() + 30) == 0
    time.sleep(0.02)
    assert store.recover_expired(time.time()) == 0


def test_delayed_and_retrying_become_ready_when_due(store: Store) -> None:
    now = time.time()
    store.enqueue([_new(1, run_at=now + 60), _new(2, run_at=now + 0.01)])
    assert store.get("id00001").state == SCHEDULED  # type: ignore[union-attr]
    assert store.claim("w", 5, now + 30) == []
    assert store.next_due() == pytest.approx(now + 0.01)
    time.sleep(0.02)
    assert store.promote_due(time.time()) == 1
    (c,) = store.claim("w", 5, time.time() + 30)
    store.finish("w", [Finish(c.id, RETRYING, error="{}", run_at=time.time() - 1)], time.time())
    assert store.get(c.id).state == RETRYING  # type: ignore[union-attr]
    assert store.promote_due(time.time()) == 1
    assert store.get(c.id).state == READY  # type: ignore[union-attr]


def test_cancel_only_what_no_worker_holds(store: Store) -> None:
    store.enqueue([_new(1), _new(2)])
    store.claim("w", 1, time.time() + 30)
    assert not store.cancel("id00001", time.time())
    assert store.cancel("id00002", time.time())
    assert not store.cancel("id00002", time.time())


def test_release_gives_back_unstarted(store: Store) -> None:
    store.enqueue([_new(1)])
    store.claim("w", 1, time.time() + 30)
    assert store.release("w", ["id00001"]) == 1
    rec = store.get("id00001")
    assert rec is not None and rec.state == READY and rec.attempts == 0


def test_periodic_tick_once_per_store(url: str) -> None:
    a, b = open_store(url), open_store(url)
    assert a.claim_tick("every-60", 1000) is True
    assert b.claim_tick("every-60", 1000) is False
    assert b.claim_tick("every-60", 1060) is True
    a.close()
    b.close()


def test_expire_deletes_finished_rows_and_space_is_reused(store: Store) -> None:
    store.enqueue([_new(i) for i in range(500)])
    store.claim("w", 500, time.time() + 30)
    store.finish("w", [Finish(f"id{i:05d}", SUCCEEDED, result="x" * 500) for i in range(500)], 1.0)
    store.enqueue([_new(1000)])
    assert store.expire(2.0) == 500
    assert store.get("id00001") is None and store.get("id01000") is not None
    assert store.counts()["succeeded"] == 0 and store.counts()["pending"] == 1
    assert store.has_work()
    store.cancel("id01000", 3.0)
    assert not store.has_work()


def test_dead_letters_are_listed_and_requeued(store: Store) -> None:
    store.enqueue([_new(1, max_lost=1), _new(2)])
    store.claim("w", 2, time.time() - 1)
    store.extend("w", ["id00002"], time.time() + 30)
    assert store.recover_expired(time.time()) == 1  # id00001: lost once, max_lost=1
    store.finish("w", [Finish("id00002", FAILED, error='{"type": "x"}')], time.time())
    dead = store.dead()
    assert [r.id for r in dead] == ["id00002", "id00001"]  # newest first
    assert all(r.state == FAILED and r.error for r in dead)
    assert store.requeue("id00001") and not store.requeue("id00001")
    rec = store.get("id00001")
    assert rec is not None and rec.state == READY and (rec.attempts, rec.lost) == (0, 0)
    assert rec.error is None and rec.finished_at is None
    assert [c.id for c in store.claim("w2", 5, time.time() + 30)] == ["id00001"]
    assert [r.id for r in store.dead()] == ["id00002"]
    assert not store.requeue("nope")


def test_progress_counts_and_a_producer_that_runs_its_own(store: Store) -> None:
    store.enqueue([_new(1), _new(2)], owner="me", lease_until=time.time() + 30)
    store.enqueue([_new(3, run_at=time.time() + 60)])
    assert store.counts() == {
        "pending": 0, "scheduled": 1, "running": 2, "retrying": 0,
        "succeeded": 0, "failed": 0, "cancelled": 0,
    }  # fmt: skip
    assert store.claim("other", 5, time.time() + 30) == []  # leased to "me" already
    store.set_progress("id00001", 40.0, "reading")
    rec = store.get("id00001")
    assert rec is not None and rec.owner == "me" and rec.attempts == 1
    assert (rec.progress, rec.progress_message) == (40.0, "reading")
    store.set_progress("id00001", 50.0, None)
    rec = store.get("id00001")
    assert rec is not None and (rec.progress, rec.progress_message) == (50.0, None)
    store.finish("me", [Finish("id00001", SUCCEEDED, result="1")], time.time())
    store.set_progress("id00001", 99.0, "late")  # ended: no change
    assert store.get("id00001").progress == 50.0  # type: ignore[union-attr]
    assert store.counts()["running"] == 1 and store.counts()["succeeded"] == 1


def test_a_large_batch_and_binary_payloads(store: Store) -> None:
    blob = bytes(range(256)) * 4
    tasks = [NewTask(f"b{i:05d}", "mod.fn", "pickle", blob, i % 4, 0.0, 10) for i in range(2500)]
    store.enqueue(tasks)
    assert store.counts()["pending"] == 2500
    got = store.claim("w", 2500, time.time() + 30)
    assert [c.priority for c in got] == sorted(c.priority for c in got)
    assert all(c.payload == blob for c in got) and len({c.id for c in got}) == 2500
    store.finish("w", [Finish(got[0].id, SUCCEEDED, result=blob)], time.time())
    assert store.get(got[0].id).result == blob  # type: ignore[union-attr]


def test_an_idle_feeder_is_woken_by_another_processs_commit(url: str) -> None:
    import select

    a, b = open_store(url), open_store(url)
    try:
        for i in range(20):  # a watch is live when made: the next commit wakes it
            w = a.watch()
            try:
                b.enqueue([_new(i)])
                if w.fd >= 0:
                    ready, _, _ = select.select([w.fd], [], [], 10)
                    assert ready and w.drain(), f"round {i}: the commit did not wake the watch"
                else:
                    assert a.changed()
            finally:
                w.close()
    finally:
        a.close()
        b.close()


def test_a_cancel_request_reaches_the_owner_of_a_running_task(store: Store) -> None:
    store.enqueue([_new(1), _new(2)])
    store.claim("w", 1, time.time() + 30)  # id00001 runs; id00002 waits
    assert not store.request_cancel("id00002") and not store.request_cancel("nope")
    assert store.cancel_requests("w") == []
    assert store.request_cancel("id00001")
    assert store.cancel_requests("w") == ["id00001"] and store.cancel_requests("x") == []
    rec = store.get("id00001")
    assert rec is not None and rec.cancel_requested and rec.state == RUNNING
    store.finish("w", [Finish("id00001", SUCCEEDED, result="1")], time.time())
    assert store.cancel_requests("w") == []  # ended: nothing to tell


def test_redis_urls_are_checked_when_the_engine_is_made(redis_server: Any) -> None:
    base = f"redis://127.0.0.1:{redis_server.port}"
    with pytest.raises(ValueError, match="Expected a database number"):
        open_store(f"{base}/x")
    with pytest.raises(ValueError, match=r"Expected a number for retry_for .* got 'abc'"):
        open_store(f"{base}/0?retry_for=abc")
    with pytest.raises(ValueError, match="Expected max_lost >= 1"):
        open_store(f"{base}/0?max_lost=0")
    with pytest.raises(ValueError, match="non-empty prefix"):
        open_store(f"{base}/0?prefix=")
    with pytest.raises(ValueError, match="valid Redis URL"):
        open_store(f"{base}/0?socket_timeout=soon")
    with pytest.raises(StoreError, match=r"unreachable for 0\.1 s.*retry_for"):
        open_store("redis://127.0.0.1:1/0?retry_for=0.1")
    store = open_store(f"valkey://127.0.0.1:{redis_server.port}/0?prefix=v")
    store.close()


def test_get_returns_the_payload_as_enqueued_until_the_task_expires(store: Store) -> None:
    """A reader in another process (Django's get_result) rebuilds the call from it."""
    payload = '[[1,"\\u00e9"],{"k":[2]}]'
    store.enqueue([NewTask("idp", "mod.fn", "json", payload, 2, 0.0, 10)])
    rec = store.get("idp")
    assert rec is not None and rec.payload == payload and isinstance(rec.payload, str)
    assert len(store.claim("a", 1, time.time() + 30)) == 1
    assert store.finish("a", [Finish("idp", SUCCEEDED, result="3")], time.time()) == 1
    rec = store.get("idp")
    assert rec is not None and rec.state == SUCCEEDED and rec.payload == payload
