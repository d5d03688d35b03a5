"""The SQLite store attacked at its edges, with real parts only: store files on disk,
real ``cytask worker`` processes, clocks that step.  Each test failed on the code
before its fix."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from _adversarial import (
    TASKS,
    a_worker_ahead_takes_no_live_lease,
    kill_workers,
    oversized_turn,
    release_the_held_task,
    start_worker,
    until,
)

from cytask._store import RUNNING, SUCCEEDED, Finish, NewTask, open_store
from cytask._store_sqlite import SQLiteStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CLOCK_BOOTTIME, boot_id")
def test_a_wall_clock_stepped_forward_takes_no_live_lease(tmp_path: Path) -> None:
    # Before: leases were on each process's time.time().  The wall clock stepped a
    # minute forward (NTP at boot, date -s, a VM resumed): the first worker to run its
    # maintenance after the step found every other worker's lease expired, and ran
    # their tasks a second time while they ran.  Now leases are on the boot clock
    a_worker_ahead_takes_no_live_lease(tmp_path, f"sqlite:///{tmp_path}/t.db")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CLOCK_BOOTTIME, boot_id")
def test_leases_of_an_earlier_boot_end_at_open(tmp_path: Path) -> None:
    # The boot clock starts again at each boot: a lease taken before a reboot (its
    # worker gone with the machine) would otherwise last as long as the new boot's
    # clock takes to reach it
    url = f"sqlite:///{tmp_path}/t.db"
    store = open_store(url)
    store.enqueue([NewTask("t1", "m.f", "json", "[[],{}]", 2, 0.0, 10)])
    assert len(store.claim("w", 1, time.time() + 3600)) == 1
    store.close()
    db = sqlite3.connect(f"{tmp_path}/t.db")
    with db:
        db.execute("UPDATE cytask_meta SET value = 'another-boot 0.0' WHERE key = 'lease_clock'")
        db.execute(f"UPDATE tasks SET lease_until = 1e12 WHERE state = {RUNNING}")  # far ahead
    db.close()
    store = open_store(url)
    try:
        assert store.recover_expired(time.time()) == 1
        assert [c.id for c in store.claim("w2", 1, time.time() + 30)] == ["t1"]
        # a store file of an older cytask (no lease_clock row): its wall-clock leases
        # keep their meaning on the new clock
        assert isinstance(store, SQLiteStore)
        db = sqlite3.connect(f"{tmp_path}/t.db")
        with db:
            db.execute("DELETE FROM cytask_meta WHERE key = 'lease_clock'")
            db.execute(f"UPDATE tasks SET lease_until = ? WHERE state = {RUNNING}",
                       (time.time() + 3600,))  # fmt: skip
        db.close()
        again = SQLiteStore(url)
        assert again.recover_expired(time.time()) == 0
        assert again.recover_expired(time.time() + 3601) == 1
        again.close()
    finally:
        store.close()


def _lease_until(path: Path, task_id: str) -> float:
    """The raw lease of the task's first attempt (0.0 once another attempt holds it)."""
    db = sqlite3.connect(path)
    try:
        row = db.execute(
            "SELECT lease_until, attempts FROM tasks WHERE id = ?", (task_id,)
        ).fetchone()
    finally:
        db.close()
    return float(row[0]) if row[1] == 1 and row[0] is not None else 0.0


def test_a_wall_clock_stepped_back_keeps_extending_leases(tmp_path: Path) -> None:
    # Before: the feeder timed its maintenance on time.time().  The wall clock of the
    # worker running a task stepped back an hour: it extended no lease for an hour,
    # and once its lease lapsed another worker ran the task again beside it.  Now the
    # feeder's rounds run on the monotonic clock
    (tmp_path / "advtasks.py").write_text(TASKS)
    url = f"sqlite:///{tmp_path}/t.db"
    go, step = tmp_path / "go", tmp_path / "step"
    store = open_store(url)
    behind = start_worker(tmp_path, url, "--workers", "1", "--lease", "1", skew=-3600.0, when=step)
    other = None
    try:
        payload = json.dumps([[str(go)], {}])
        store.enqueue([NewTask("held", "adv.held", "json", payload, 2, 0.0, 10)])
        until("the worker runs the task", Path(f"{go}.started1").exists)
        other = start_worker(tmp_path, url, "--workers", "1", "--lease", "1", skew=0.0)
        step.touch()
        first = _lease_until(tmp_path / "t.db", "held")
        assert first > 0
        # extended every lease/3 after the step: 2 extensions, past 2 s of waiting
        until(
            "the stepped worker extends its lease twice",
            lambda: _lease_until(tmp_path / "t.db", "held") > first + 0.5,
            timeout=10.0,
        )
        release_the_held_task(store, go)
    finally:
        kill_workers(behind, other)
        store.close()


def test_busy_timeout_out_of_range_is_named_or_clamped(tmp_path: Path) -> None:
    # Before: busy_timeout=nan or inf failed with "cannot convert float NaN to
    # integer" (no option named), a negative one was taken, and one of 2**31 ms or
    # more (about 25 days, "wait forever") was read by SQLite as 0: no wait at open
    for bad in ("nan", "-1"):
        with pytest.raises(ValueError, match=r"Expected busy_timeout >= 0 seconds.*got"):
            SQLiteStore(f"sqlite:///{tmp_path}/t.db?busy_timeout={bad}")
    for long in ("inf", "1e9"):
        s = SQLiteStore(f"sqlite:///{tmp_path}/t.db?busy_timeout={long}")
        assert s.busy_timeout == float(long)
        s.close()
    # while another process holds the write lock, an open with a long busy_timeout
    # waits for it instead of failing at once
    holder = sqlite3.connect(f"{tmp_path}/t.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        code = (
            "import sys; from cytask._store_sqlite import SQLiteStore; "
            f"SQLiteStore('sqlite:///{tmp_path}/new.db?busy_timeout=1e9'); print('opened')"
        )
        # a new file: no lock to wait for; then the held one: it waits (killed at 3 s)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
        assert done.stdout.strip() == b"opened", done.stderr
        code = code.replace("new.db", "t.db")
        with pytest.raises(subprocess.TimeoutExpired):
            subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=3)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_an_oversized_submit_fails_alone_not_the_requests_sharing_its_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite takes no string or blob over SQLITE_MAX_LENGTH (1e9 bytes unless built
    # otherwise; lowered here to 1 MB on each connection the store opens).  Before:
    # arguments over it failed the commit they shared with other requests (asubmit's
    # turn, group commit), and every request of that commit got its StoreError

    from cytask import Engine

    connect = SQLiteStore._connect

    def small(self: SQLiteStore) -> sqlite3.Connection:
        db = connect(self)
        db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1_000_000)
        return db

    monkeypatch.setattr(SQLiteStore, "_connect", small)
    producer = Engine(workers=0, store=f"sqlite:///{tmp_path}/t.db")
    try:
        first, big, last = oversized_turn(producer)
        assert not isinstance(first, BaseException), first  # before: the big one's error
        assert not isinstance(last, BaseException), last
        assert isinstance(big, ValueError) and "SQLITE_MAX_LENGTH" in str(big), big
        assert producer.get(first.task_id) is not None  # type: ignore[attr-defined]
        assert producer.get(last.task_id) is not None  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match=r"at most 934464 bytes .*got 20000\d\d bytes"):
            producer.submit(max, "y" * 2_000_000, "z")
        assert producer.submit(max, "y" * 900_000, "z").task_id  # under it: stored
    finally:
        producer.shutdown()


@pytest.mark.parametrize("step", ["expire", "promote_due"])
def test_a_large_maintenance_step_lets_other_writers_in(tmp_path: Path, step: str) -> None:
    # Before: expire() deleted every expired row in one transaction, holding the write
    # lock ~0.3 s per 300,000 rows (workers restarted after results piled up: seconds
    # for millions), and a producer in another process whose submit waited longer
    # than busy_timeout for it failed with "database is locked".  promote_due() of
    # tasks delayed to one time alike
    import threading

    url = f"sqlite:///{tmp_path}/t.db"
    store = SQLiteStore(url)
    old, later = time.time() - 7200, time.time() + 3600
    for b in range(0, 300_000, 10_000):
        if step == "expire":  # results of two hours ago
            rows = [
                NewTask(f"{i:032x}", "m.f", "json", "[[1],{}]", 2, 0.0, 10)
                for i in range(b, b + 10_000)
            ]
            store.enqueue(rows, owner="w", lease_until=time.time() + 300)
            done = [Finish(r.id, SUCCEEDED, result="1", attempt=1) for r in rows]
            store.finish("w", done, old)
        else:  # tasks delayed to one time an hour from now
            rows = [
                NewTask(f"{i:032x}", "m.f", "json", "[[1],{}]", 2, later, 10)
                for i in range(b, b + 10_000)
            ]
            store.enqueue(rows)
    producer = SQLiteStore(url + "?busy_timeout=0.1")
    expired: list[int] = []
    went = threading.Event()

    def expire() -> None:
        went.set()
        if step == "expire":
            expired.append(store.expire(time.time() - 3600))
        else:
            expired.append(store.promote_due(later + 1))

    t = threading.Thread(target=expire)
    submitted = 0
    try:
        t.start()
        went.wait(10)
        while t.is_alive():
            producer.enqueue([NewTask(f"p{submitted}", "m.f", "json", "[[],{}]", 2, 0.0, 10)])
            submitted += 1
    finally:
        t.join(60)
        producer.close()
        store.close()
    assert expired == [300_000] and submitted > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CLOCK_BOOTTIME, boot_id")
def test_a_wall_clock_stepped_forward_runs_no_delayed_task_early(tmp_path: Path) -> None:
    # Before: due times were compared on each process's time.time().  The wall clock
    # stepped an hour forward: the first worker to look ran every task delayed by
    # less than an hour at once.  Now due times are on the boot clock as leases are
    (tmp_path / "advtasks.py").write_text(TASKS)
    url = f"sqlite:///{tmp_path}/t.db"
    store = open_store(url)
    ahead = None
    try:
        now = time.time()
        store.enqueue([NewTask("later", "adv.echo", "json", "[[1], {}]", 2, now + 600, 10)])
        store.enqueue([NewTask("soon", "adv.echo", "json", "[[2], {}]", 2, now + 0.3, 10)])
        ahead = start_worker(tmp_path, url, "--workers", "1", skew=3600.0)
        # "soon" ran: the worker's promotions up to its due time are done, and one
        # promotion takes every task due by the worker's clock
        until("the task due soon ran", lambda: store.get("soon").terminal)  # type: ignore[union-attr]
        assert store.get("soon").result == "2"  # type: ignore[union-attr]
        rec = store.get("later")
        assert rec is not None and rec.status == "scheduled", rec
        assert abs(rec.run_at - (now + 600)) < 1  # read back on the wall clock
    finally:
        if ahead is not None and ahead.poll() is None:
            ahead.kill()
            ahead.wait(30)
        store.close()


def test_url_edge_cases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: sqlite:///:memory: (and sqlite:///file:...) opened a file named so in
    # the working folder, and sqlite:///~/tasks.db failed: "folder .../~ does not exist"
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite:///:memory:", "sqlite:///file:tasks.db"):
        with pytest.raises(ValueError, match=r"Expected a file path for store.*without a store"):
            SQLiteStore(url)
    assert not list(tmp_path.iterdir())
    monkeypatch.setenv("HOME", str(tmp_path))
    s = SQLiteStore("sqlite:///~/home.db")
    assert s.path == f"{tmp_path}/home.db" and (tmp_path / "home.db").exists()
    s.close()
    # odd characters in the path: a quoted ? and #, spaces, quotes, non-ASCII
    odd = tmp_path / "a dir 'x'" / "tâches #1?.db"
    odd.parent.mkdir()
    s = SQLiteStore("sqlite:///" + urllib.parse.quote(str(odd)) + "?max_lost=2")
    assert s.path == str(odd) and odd.exists() and s.max_lost == 2
    again = open_store(s.url)  # its url opens the same file
    assert isinstance(again, SQLiteStore) and again.path == str(odd)
    again.close()
    s.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CLOCK_BOOTTIME, boot_id")
def test_a_boot_whose_wall_clock_is_behind_keeps_the_last_boots_due_times(
    tmp_path: Path,
) -> None:
    # A machine without a real-time clock boots with its wall clock far behind (1970,
    # or the last shutdown) until NTP sets it.  The new boot's clock anchored on that
    # wall clock would leave the tasks the last boot delayed waiting that much longer
    # (decades); anchored at the last time the file saw, they wait what was asked
    url = f"sqlite:///{tmp_path}/t.db"
    store = open_store(url)
    store.enqueue([NewTask("later", "m.f", "json", "[[],{}]", 2, time.time() + 30, 10)])
    store.close()
    ahead = 10 * 24 * 3600.0  # the last boot's clock ran ten days ahead of this one's
    db = sqlite3.connect(f"{tmp_path}/t.db")
    with db:
        db.execute("UPDATE cytask_meta SET value = 'another-boot 0.0' WHERE key = 'lease_clock'")
        db.execute(
            "UPDATE tasks SET enqueued_at = enqueued_at + ?, run_at = run_at + ?", (ahead, ahead)
        )
    db.close()
    store = open_store(url)
    try:
        due = store.next_due()
        assert due is not None and 25 < due - time.time() < 35, due - time.time()
    finally:
        store.close()


def test_every_query_of_the_feeder_and_dead_letters_uses_an_index(tmp_path: Path) -> None:
    # Before: dead() scanned every row and sorted them (its "state = FAILED" does not
    # tell SQLite that the partial index of ended tasks holds them): with a million
    # results kept for result_ttl, each dead-letter listing read them all
    from cytask import _store_sqlite as m

    store = SQLiteStore(f"sqlite:///{tmp_path}/t.db")
    try:
        db = store._writer()
        statements = {
            "claim": (m._CLAIM, ("w", 1.0, 1.0, 5)),
            "any ready": (m._ANY_READY, ()),
            "has work": (m._HAS_WORK, ()),
            "dead": (m._DEAD, (5,)),
            "expire": (m._EXPIRE, (1.0, 5)),
            "promote": (m._PROMOTE, (1.0, 5)),
            "recover": (m._RECOVER, (1.0, 1.0)),
        }
        for what, (sql, args) in statements.items():
            plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, args)]
            assert "SCAN tasks" not in plan and not any("TEMP B-TREE" in p for p in plan), (
                what,
                plan,
            )
    finally:
        store.close()


def test_a_write_error_of_the_disk_fails_no_task_that_ran(tmp_path: Path) -> None:
    # A file size limit (RLIMIT_FSIZE), a disk quota or a failing disk fail SQLite's
    # writes with "disk I/O error" (only ENOSPC reads "disk is full").  Before: that
    # was taken as the store refusing the value, so the worker recorded the task
    # FAILED ("the store refused to record the end") as soon as a short record fitted
    # where its result did not: a task that succeeded failed for good.  Now the writer
    # waits for the disk, as for a full one; the worker is stopped, and the task runs
    # again elsewhere
    (tmp_path / "advtasks.py").write_text(TASKS)
    url = f"sqlite:///{tmp_path}/t.db"
    store = open_store(url)
    store.enqueue([NewTask("warm", "adv.echo", "json", "[[1], {}]", 2, 0.0, 10)])
    code = (
        "import resource, runpy, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (3_000_000, 3_000_000))\n"
        "sys.argv = ['cytask', *sys.argv[1:]]\n"
        "runpy.run_module('cytask', run_name='__main__')\n"
    )
    with open(tmp_path / "worker.log", "ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-c", code, "worker", "advtasks", "--store", url, "--quiet",
             "--workers", "1", "--lease", "1"],
            cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(tmp_path)),
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        until("the worker ran a task", lambda: store.get("warm").terminal)  # type: ignore[union-attr]
        # a result of 4 MB: no file of the worker may pass 3 MB
        store.enqueue([NewTask("big", "adv.big", "json", "[[4000000], {}]", 2, 0.0, 10)])
        until(
            "the worker failed to write the result 4 times, or recorded an end",
            lambda: (
                (tmp_path / "worker.log").read_text().count("disk I/O error") >= 4
                or store.get("big").terminal
            ),  # type: ignore[union-attr]
        )
        rec = store.get("big")
        assert rec is not None and rec.status == "running", rec
    finally:
        worker.kill()
        worker.wait(30)
    # another worker (no limit) runs it once the lease lapsed
    other = subprocess.Popen(
        [sys.executable, "-m", "cytask", "worker", "advtasks", "--store", url, "--quiet",
         "--lease", "1"],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(tmp_path)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        until("the task ran again", lambda: store.get("big").terminal)  # type: ignore[union-attr]
        rec = store.get("big")
        assert rec is not None and rec.status == "succeeded" and rec.attempts == 2, rec
    finally:
        other.kill()
        other.wait(30)
        store.close()
