"""The SQLite store on its own: claims, leases, recovery, ticks, expiry, schema, bad files."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

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
    open_store,
)
from cytask._store_sqlite import SCHEMA_VERSION, SQLiteStore


def _new(i: int, *, run_at: float = 0.0, priority: int = 2, max_lost: int = 10) -> NewTask:
    return NewTask(f"id{i:05d}", "mod.fn", "json", "[[],{}]", priority, run_at, max_lost)


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    s = open_store(f"sqlite:///{tmp_path}/t.db")
    assert isinstance(s, SQLiteStore)
    yield s
    s.close()


def test_url_forms_and_options(tmp_path: Path) -> None:
    s = SQLiteStore(f"sqlite:///{tmp_path}/a.db?synchronous=full&max_lost=3")
    assert s.path == f"{tmp_path}/a.db" and s.synchronous == "full" and s.durable_on_power_loss
    assert s.max_lost == 3
    s.close()
    with pytest.raises(ValueError, match="Unknown store option"):
        SQLiteStore(f"sqlite:///{tmp_path}/a.db?sync=full")
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore(f"sqlite:///{tmp_path}/a.db?synchronous=sometimes")
    with pytest.raises(ValueError, match="sqlite:///"):
        open_store("postgres://x")
    with pytest.raises(TypeError, match="Expected a store URL"):
        open_store(42)


def test_claim_is_priority_then_fifo_and_leased_once(store: SQLiteStore) -> None:
    store.enqueue([_new(1, priority=3), _new(2), _new(3, priority=0), _new(4)])
    got = store.claim("a", 3, time.time() + 30)
    assert [c.id for c in got] == ["id00003", "id00002", "id00004"]
    assert all(c.attempts == 1 for c in got)
    assert [c.id for c in store.claim("b", 10, time.time() + 30)] == ["id00001"]
    assert store.claim("c", 10, time.time() + 30) == []
    rec = store.get("id00003")
    assert rec is not None and rec.state == RUNNING and rec.owner == "a"


def test_concurrent_claims_never_overlap(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    first = SQLiteStore(url)
    first.enqueue([_new(i) for i in range(2000)])
    seen: list[list[str]] = []
    barrier = threading.Barrier(4)

    def claimer(k: int) -> None:
        s = SQLiteStore(url)  # a connection of its own, as another process would have
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


def test_finish_checks_the_owner(store: SQLiteStore) -> None:
    store.enqueue([_new(1), _new(2)])
    store.claim("a", 2, time.time() + 30)
    done = store.finish(
        "a", [Finish("id00001", SUCCEEDED, result="3"), Finish("id00002", FAILED, error="{}")], 1.0
    )
    assert done == 2
    assert store.finish("a", [Finish("id00001", SUCCEEDED, result="4")], 2.0) == 0  # once
    rec = store.get("id00001")
    assert rec is not None and rec.state == SUCCEEDED and rec.result == "3" and rec.terminal


def test_expired_lease_runs_again_and_a_late_result_is_dropped(store: SQLiteStore) -> None:
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


def test_a_task_that_keeps_killing_its_worker_fails(store: SQLiteStore) -> None:
    store.enqueue([_new(1, max_lost=2)])
    for _ in range(2):
        store.claim("w", 1, time.time() - 1)
        store.recover_expired(time.time())
    rec = store.get("id00001")
    assert rec is not None and rec.state == FAILED
    assert rec.error is not None and "WorkerLost" in rec.error and "2 times" in rec.error


def test_extend_keeps_a_lease(store: SQLiteStore) -> None:
    store.enqueue([_new(1)])
    store.claim("w", 1, time.time() + 0.01)
    assert store.extend("w", ["id00001"], time.time() + 30) == 1
    assert store.extend("other", ["id00001"], time.time() + 30) == 0
    time.sleep(0.02)
    assert store.recover_expired(time.time()) == 0


def test_delayed_and_retrying_become_ready_when_due(store: SQLiteStore) -> None:
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


def test_cancel_only_what_no_worker_holds(store: SQLiteStore) -> None:
    store.enqueue([_new(1), _new(2)])
    store.claim("w", 1, time.time() + 30)
    assert not store.cancel("id00001", time.time())
    assert store.cancel("id00002", time.time())
    assert not store.cancel("id00002", time.time())


def test_release_gives_back_unstarted(store: SQLiteStore) -> None:
    store.enqueue([_new(1)])
    store.claim("w", 1, time.time() + 30)
    assert store.release("w", ["id00001"]) == 1
    rec = store.get("id00001")
    assert rec is not None and rec.state == READY and rec.attempts == 0


def test_periodic_tick_once_per_store(tmp_path: Path) -> None:
    a = SQLiteStore(f"sqlite:///{tmp_path}/t.db")
    b = SQLiteStore(f"sqlite:///{tmp_path}/t.db")
    assert a.claim_tick("every-60", 1000) is True
    assert b.claim_tick("every-60", 1000) is False
    assert b.claim_tick("every-60", 1060) is True
    a.close()
    b.close()


def test_expire_deletes_finished_rows_and_space_is_reused(store: SQLiteStore) -> None:
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


def test_a_store_from_a_newer_cytask_is_refused(tmp_path: Path) -> None:
    SQLiteStore(f"sqlite:///{tmp_path}/t.db").close()
    db = sqlite3.connect(tmp_path / "t.db")
    db.execute("UPDATE cytask_meta SET value = ?", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer cytask"):
        SQLiteStore(f"sqlite:///{tmp_path}/t.db")


def test_an_older_unknown_schema_is_refused(tmp_path: Path) -> None:
    SQLiteStore(f"sqlite:///{tmp_path}/t.db").close()
    db = sqlite3.connect(tmp_path / "t.db")
    db.execute("UPDATE cytask_meta SET value = '0'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="cannot migrate"):
        SQLiteStore(f"sqlite:///{tmp_path}/t.db")


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "app.db")
    db.execute("CREATE TABLE users (id INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="another program"):
        SQLiteStore(f"sqlite:///{tmp_path}/app.db")


def test_a_corrupt_file_and_a_missing_folder_are_named(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not a cytask store or is corrupt"):
        SQLiteStore(f"sqlite:///{tmp_path}/junk.db")
    with pytest.raises(StoreError, match="does not exist"):
        SQLiteStore(f"sqlite:///{tmp_path}/no/such/t.db")


def test_a_locked_store_is_named_and_stays_usable(tmp_path: Path) -> None:
    s = SQLiteStore(f"sqlite:///{tmp_path}/t.db", busy_timeout=0.05)
    other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    with pytest.raises(StoreError, match="locked"):
        s.enqueue([_new(1)])
    other.execute("ROLLBACK")
    other.close()
    s.enqueue([_new(1)])  # usable again
    assert s.get("id00001") is not None
    with pytest.raises(StoreError, match="enqueue failed"):
        s.enqueue([_new(1)])  # a duplicate id: rolled back, named
    s.enqueue([_new(2)])
    assert s.counts()["pending"] == 2
    s.close()


def test_commits_are_checkpointed_off_the_commit_path(store: SQLiteStore) -> None:
    for i in range(300):
        store.enqueue([_new(i)])
    deadline = time.monotonic() + 10
    while store.checkpoints == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.checkpoints >= 1
    db = sqlite3.connect(store.path)
    busy, frames, done = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    db.close()
    assert busy == 0 and frames == done  # nothing left behind
