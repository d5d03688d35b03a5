"""The SQLite store on its own: claims, leases, recovery, ticks, expiry, schema, bad files."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from cytask import StoreError
from cytask._store import READY, NewTask, open_store
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
    with pytest.raises(ValueError, match=r"Expected a number for max_lost .* got 'abc'"):
        SQLiteStore(f"sqlite:///{tmp_path}/a.db?max_lost=abc")
    with pytest.raises(ValueError, match="Expected a number for busy_timeout"):
        SQLiteStore(f"sqlite:///{tmp_path}/a.db?busy_timeout=soon")
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore(f"sqlite:///{tmp_path}/a.db?synchronous=sometimes")
    with pytest.raises(ValueError, match="sqlite:///"):
        open_store("postgres://x")
    with pytest.raises(TypeError, match="Expected a store URL"):
        open_store(42)


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


def test_a_write_waits_for_the_lock_in_short_pauses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite's busy handler slept 1 ms and more between tries: beside a worker process,
    # one producer commit in six stalled 1.2 ms behind a ~50 us claim
    pauses: list[float] = []
    waiting = threading.Event()

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        waiting.set()
        time.sleep(seconds)

    monkeypatch.setattr("cytask._store_sqlite._pause", pause)
    s = SQLiteStore(f"sqlite:///{tmp_path}/t.db", busy_timeout=30)
    s.enqueue([_new(0)])
    assert s._writer().execute("PRAGMA busy_timeout").fetchone()[0] == 0  # not SQLite's
    holder = sqlite3.connect(s.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write lock
    writers = [
        threading.Thread(target=s.enqueue, args=([_new(1)],)),  # one row: autocommit
        threading.Thread(target=s.enqueue, args=([_new(2), _new(3)],)),  # BEGIN IMMEDIATE
    ]
    for t in writers:
        t.start()
    assert waiting.wait(30), "the write did not wait for the lock"
    holder.execute("COMMIT")
    for t in writers:
        t.join(30)
    assert not any(t.is_alive() for t in writers)
    assert s.counts()["pending"] == 4
    assert pauses and max(pauses) <= 0.001
    holder.close()
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


def test_close_does_not_wait_for_the_checkpointers_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The checkpointer pauses after a commit to let more gather; close() joined it
    # only after that pause (0.2 s at every `cytask worker --burst` exit)
    monkeypatch.setattr("cytask._store_sqlite._CHECKPOINT_EVERY", 120.0)
    s = SQLiteStore(f"sqlite:///{tmp_path}/t.db")
    s.enqueue([_new(1)])  # starts the checkpointer, which now pauses 120 s
    assert s._checkpointer is not None
    closer = threading.Thread(target=s.close)
    closer.start()
    closer.join(30)
    assert not closer.is_alive(), "close() waited for the checkpointer's pause"
    assert not s._checkpointer.is_alive()


def test_a_version_1_store_is_migrated_in_place(tmp_path: Path) -> None:
    SQLiteStore(f"sqlite:///{tmp_path}/t.db").close()
    db = sqlite3.connect(tmp_path / "t.db")  # make it a store as cytask 0.2.0 wrote it
    db.execute("ALTER TABLE tasks DROP COLUMN cancel_requested")
    db.execute(
        "INSERT INTO tasks (id, name, codec, payload, priority, state, max_lost, run_at, "
        "enqueued_at) VALUES ('old', 'mod.fn', 'json', '[[],{}]', 2, 0, 10, 0, 0)"
    )
    db.execute("UPDATE cytask_meta SET value = '1'")
    db.commit()
    db.close()
    store = SQLiteStore(f"sqlite:///{tmp_path}/t.db")
    try:
        rec = store.get("old")
        assert rec is not None and rec.state == READY and not rec.cancel_requested
        (c,) = store.claim("w", 1, time.time() + 30)
        assert store.request_cancel(c.id) and store.cancel_requests("w") == ["old"]
    finally:
        store.close()
    db = sqlite3.connect(tmp_path / "t.db")
    assert db.execute("SELECT value FROM cytask_meta").fetchone() == (str(SCHEMA_VERSION),)
    db.close()


def test_a_deleted_or_replaced_file_takes_no_more_commits(tmp_path: Path) -> None:
    # SQLite goes on writing to a file deleted under it (the open inode): before, every
    # delay() "committed" rows no other process could see, lost at exit.  Each commit
    # now refuses, naming the problem; a file put in its place is not written either
    import asyncio

    from cytask import Engine

    path = tmp_path / "t.db"
    eng = Engine(workers=0, store=f"sqlite:///{path}")
    try:
        eng.submit(int, 1)
        for f in tmp_path.glob("t.db*"):
            f.unlink()
        time.sleep(0.002)  # past the store's look interval (_FILE_CHECK_S)
        with pytest.raises(StoreError, match="the file was deleted after this process opened"):
            eng.submit(int, 2)
        with pytest.raises(StoreError, match="was deleted"):
            eng.submit_many(int, [(i,) for i in range(300)])  # the transaction path too

        async def requests() -> list[object]:
            return await asyncio.gather(
                *(eng.asubmit(int, i) for i in range(3)), return_exceptions=True
            )

        errors = asyncio.run(requests())
        assert all(isinstance(e, StoreError) and "was deleted" in str(e) for e in errors), errors
        open_store(f"sqlite:///{path}").close()  # another store file at the same path
        time.sleep(0.002)
        with pytest.raises(StoreError, match="replaced by another file"):
            eng.submit(int, 3)
    finally:
        eng.shutdown()


def test_a_relative_path_stays_the_same_file_after_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A relative path was opened again relative to the working folder of the moment:
    # after a chdir(), a new thread's reader opened (and created) another, empty file
    from cytask import Engine

    monkeypatch.chdir(tmp_path)
    eng = Engine(workers=0, store="sqlite:///rel.db")
    try:
        h = eng.submit(int, 1)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        found: list[object] = []
        t = threading.Thread(target=lambda: found.append(eng.get(h.task_id)))
        t.start()
        t.join(30)
        assert found and found[0] is not None
        assert not list(elsewhere.iterdir())
        assert eng._durable.store.url == f"sqlite:///{tmp_path}/rel.db"  # type: ignore[union-attr]
    finally:
        eng.shutdown()
