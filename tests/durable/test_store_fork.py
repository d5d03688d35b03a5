"""An SQLite store across ``fork()``: no connection and no call crosses it.

Each scenario runs in a subprocess with a timeout: a broken fork hangs the child.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def _run(code: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr


def test_a_childs_commits_survive_the_parent_closing_the_store(tmp_path: Path) -> None:
    # The parent's connections must be closed at the fork: a child that inherits them
    # believes it holds the parent's file locks, so the parent's last close deletes
    # the WAL the child goes on writing to, and the child's commits vanish.
    _run(
        f"""
        import os, sqlite3, warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads
        from cytask._store import NewTask
        from cytask._store_sqlite import SQLiteStore

        path = {str(tmp_path / "tasks.db")!r}
        def new(i):
            return NewTask(f"t{{i}}", "mod:add", "json", b"[]", 2, 0.0, 10)
        parent = SQLiteStore("sqlite:///" + path)
        parent.enqueue([new(0)])
        parent.claim("p", 1, 1e12)          # readers and the writer are open
        child_ready, parent_closed = os.pipe(), os.pipe()
        pid = os.fork()
        if pid == 0:
            store = SQLiteStore("sqlite:///" + path)
            store.enqueue([new(1)])
            os.write(child_ready[1], b"x")
            os.read(parent_closed[0], 1)
            for i in range(2, 50):
                store.enqueue([new(i)])
            store.close()
            os._exit(0)
        os.read(child_ready[0], 1)
        parent.close()                      # the last connection of this process
        os.write(parent_closed[1], b"x")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        n = sqlite3.connect(path).execute("SELECT count(*) FROM tasks").fetchone()[0]
        assert n == 50, f"{{50 - n}} of the child's commits were lost"
        print("ok")
        """,
        tmp_path,
    )


def test_fork_waits_for_a_store_call_in_flight(tmp_path: Path) -> None:
    # A thread inside SQLite at the fork may hold a process-wide SQLite mutex, which
    # stays held in the child forever.  The fork waits until the call has left: here
    # the call waits for a write lock, and the enqueue it makes is in the child's view.
    _run(
        f"""
        import os, sqlite3, threading, warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads
        from cytask._store import NewTask
        from cytask._store_sqlite import SQLiteStore, _GATE

        path = {str(tmp_path / "tasks.db")!r}
        store = SQLiteStore("sqlite:///" + path)
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")   # the write lock: the enqueue below waits
        task = NewTask("t1", "mod:add", "json", b"[]", 2, 0.0, 10)
        writer = threading.Thread(target=store.enqueue, args=([task],))
        writer.start()
        entered = threading.Event()
        def watch():
            while True:
                with _GATE._cond:
                    if not entered.is_set() and _GATE._inside:
                        entered.set()
                    if _GATE._forking:
                        break
                    _GATE._cond.wait(0.01)
            holder.execute("COMMIT")        # the fork waits: now let the call finish
        watcher = threading.Thread(target=watch)
        watcher.start()
        assert entered.wait(30), "the enqueue never entered the store"
        pid = os.fork()
        if pid == 0:
            n = sqlite3.connect(path).execute("SELECT count(*) FROM tasks").fetchone()[0]
            os._exit(0 if n == 1 else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the fork did not wait for the call"
        writer.join(); watcher.join()
        assert store.get("t1") is not None
        store.close()
        print("ok")
        """,
        tmp_path,
    )


def test_a_store_reopens_its_connections_after_a_fork_in_the_parent(tmp_path: Path) -> None:
    _run(
        f"""
        import os, warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        from cytask._store import NewTask
        from cytask._store_sqlite import SQLiteStore

        store = SQLiteStore("sqlite:///" + {str(tmp_path / "tasks.db")!r})
        store.enqueue([NewTask("a", "mod:add", "json", b"[]", 2, 0.0, 10)])
        assert store.changed()
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
            assert store._db is None            # closed at the fork
            store.enqueue([NewTask(f"b{{_}}", "mod:add", "json", b"[]", 2, 0.0, 10)])
            assert store.changed()              # a fresh watch connection: a change
        assert store.counts()["pending"] == 4
        assert [c.id for c in store.claim("me", 10, 1e12)] == ["a", "b0", "b1", "b2"]
        store.close()
        print("ok")
        """,
        tmp_path,
    )


def test_a_fork_child_checkpoints_its_own_commits(tmp_path: Path) -> None:
    # The checkpointer thread does not cross a fork: the child starts one of its own
    _run(
        f"""
        import os, time, warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        from cytask._store import NewTask
        from cytask._store_sqlite import SQLiteStore

        store = SQLiteStore("sqlite:///" + {str(tmp_path / "tasks.db")!r})
        store.enqueue([NewTask("a", "mod:add", "json", b"[]", 2, 0.0, 10)])
        assert store._checkpointer is not None   # the parent's runs
        pid = os.fork()
        if pid == 0:
            store.enqueue([NewTask("b", "mod:add", "json", b"[]", 2, 0.0, 10)])
            deadline = time.monotonic() + 20
            while store.checkpoints == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            os._exit(0 if store.checkpoints and store._checkpointer.is_alive() else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child never checkpointed"
        store.close()
        print("ok")
        """,
        tmp_path,
    )
