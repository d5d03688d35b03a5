"""The SQLite store: one file, no server, shared by every process on the machine.

``sqlite:///relative/tasks.db`` or ``sqlite:////absolute/tasks.db`` (SQLAlchemy's
convention), with options in the query string::

    sqlite:////var/app/tasks.db?synchronous=full&lease=30&busy_timeout=5&max_lost=10

What survives what (``synchronous``, SQLite's own setting):

- ``normal`` (default): WAL with no fsync per commit.  A committed task survives a
  ``kill -9`` or an OOM kill of any process (the WAL is in the OS page cache); an OS
  crash or power loss may lose the last commits (never corrupts the file).
- ``full``: an fsync per commit (about 7x slower here): commits also survive power loss.
- ``off``: no fsyncs at all; an OS crash may corrupt the file.  Tests only.

Every write is one transaction begun with ``BEGIN IMMEDIATE`` (the write lock up
front, so a busy store waits ``busy_timeout`` seconds instead of failing on a stale
snapshot); a claim is one ``UPDATE ... RETURNING``.  A leased task whose worker
died (its lease passed) goes back to READY (``recover_expired``): opening a store a
crashed process left needs no repair step.

Leases and due times are kept on the machine's boot clock (Linux ``CLOCK_BOOTTIME``,
which no NTP step or ``date -s`` moves), moved by an offset per boot kept in the file
(the wall clock at that boot's first open: a delay spans reboots), so a wall clock
stepped forward expires no live lease and runs no delayed task early; finish times
and periodic ticks stay on the wall clock.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import sqlite3
import struct
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, NoReturn, TypeVar

from cytask._core import report_unraisable
from cytask._lifecycle import register_fork_hooks
from cytask._store import (
    CANCELLED,
    FAILED,
    READY,
    RETRYING,
    RUNNING,
    SCHEDULED,
    STATE_NAMES,
    SUCCEEDED,
    TICK_KEEP_S,
    Claimed,
    Finish,
    NewTask,
    Store,
    StoreError,
    TaskRecord,
    Watch,
    number_option,
)

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

#: bump with a migration in _MIGRATIONS when the schema changes
SCHEMA_VERSION = 2
#: PRAGMA application_id of a cytask store ("cyta"): another program's file is refused
APPLICATION_ID = 0x63797461

_SCHEMA = f"""
CREATE TABLE cytask_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    codec TEXT NOT NULL,
    payload BLOB NOT NULL,
    priority INTEGER NOT NULL,
    state INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0,
    max_lost INTEGER NOT NULL,
    run_at REAL NOT NULL,
    enqueued_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    owner TEXT,
    lease_until REAL,
    result BLOB,
    error TEXT,
    progress REAL NOT NULL DEFAULT 0,
    progress_message TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tasks_ready ON tasks (priority, seq) WHERE state = {READY};
CREATE INDEX tasks_due ON tasks (run_at) WHERE state IN ({SCHEDULED}, {RETRYING});
CREATE INDEX tasks_lease ON tasks (lease_until) WHERE state = {RUNNING};
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE state >= {SUCCEEDED};
CREATE TABLE ticks (key TEXT NOT NULL, tick INTEGER NOT NULL, PRIMARY KEY (key, tick))
    WITHOUT ROWID;
"""


def _add_cancel_requested(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE tasks ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0")


#: from version -> function upgrading the open transaction to version + 1
_MIGRATIONS: dict[int, Any] = {1: _add_cancel_requested}

_SYNC = {"off": 0, "normal": 1, "full": 2, "extra": 3}
_SQLITE_BUSY = 5  # sqlite3.OperationalError.sqlite_errorcode of a lock held elsewhere
#: the longest pause between two tries for the write lock (see _lock_and_execute)
_MAX_PAUSE = 0.001
_pause = time.sleep  # between tries for the write lock (a test counts them)
#: SQLite's own threshold (pages of 4 KiB), a fallback when the checkpointer lags
_AUTOCHECKPOINT_PAGES = 10_000
#: seconds between background checkpoints while commits come
_CHECKPOINT_EVERY = 0.2
#: seconds between looks that the store's path still names the file opened (a stat())
_FILE_CHECK_S = 0.001


def _busy_ms(seconds: float) -> int:
    """``PRAGMA busy_timeout``'s milliseconds: SQLite takes an int (2**31 ms or more,
    about 25 days, read as 0: no wait at all), so longer waits, inf included, wait that."""
    return int(min(seconds * 1000, 2**31 - 1))


def _lease_clock() -> tuple[str, Callable[[], float]]:
    """The clock leases are kept on: (the boot it counts from, a function reading it).

    Linux: ``CLOCK_BOOTTIME``, one clock for every process of the machine, never
    stepped (NTP, ``date -s``, a VM's clock set at resume) and counting suspends;
    it starts again at each boot, which ``boot_id`` names.  Elsewhere the wall clock.
    """
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        clock = functools.partial(time.clock_gettime, time.CLOCK_BOOTTIME)
        clock()
    except (OSError, AttributeError, ValueError):
        return "", time.time
    return boot, clock


_INSERT = (
    "INSERT INTO tasks (id, name, codec, payload, priority, state, max_lost, run_at, "
    "enqueued_at, attempts, owner, lease_until, started_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: bytes of a row besides its payload or result (SQLITE_MAX_LENGTH bounds the row too)
_ROW_ROOM = 64 * 1024
#: up to this many rows go in one INSERT statement (a group commit's usual size)
_ONE_STATEMENT_ROWS = 16


@functools.lru_cache(maxsize=_ONE_STATEMENT_ROWS)
def _insert_rows(n: int) -> str:
    """An INSERT of n rows in one statement."""
    return _INSERT + ", (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" * (n - 1)


_CLAIM = (
    f"UPDATE tasks SET state = {RUNNING}, owner = ?, lease_until = ?, "
    "attempts = attempts + 1, started_at = ? "
    f"WHERE seq IN (SELECT seq FROM tasks WHERE state = {READY} ORDER BY priority, seq LIMIT ?) "
    "RETURNING seq, id, name, codec, payload, priority, attempts, lost"
)
_HAS_WORK = (
    f"SELECT 1 WHERE EXISTS (SELECT 1 FROM tasks WHERE state = {READY}) "
    f"OR EXISTS (SELECT 1 FROM tasks WHERE state IN ({SCHEDULED}, {RETRYING})) "
    f"OR EXISTS (SELECT 1 FROM tasks WHERE state = {RUNNING})"
)
_ANY_READY = f"SELECT 1 FROM tasks WHERE state = {READY} LIMIT 1"
_FINISH = (
    "UPDATE tasks SET state = ?, result = ?, error = ?, finished_at = ?, run_at = ?, "
    f"owner = NULL, lease_until = NULL WHERE id = ? AND owner = ? AND state = {RUNNING} "
    "AND (? = 0 OR attempts = ?)"  # Finish.attempt: 0 checks only the owner
)
_LOST_ERROR = (
    '\'{"type": "cytask.WorkerLost", "message": "its worker died (lease expired) \' '
    '|| (lost + 1) || \' times while running it", "traceback": ""}\''
)
_RECOVER = (
    f"UPDATE tasks SET state = CASE WHEN lost + 1 >= max_lost THEN {FAILED} ELSE {READY} END, "
    f"error = CASE WHEN lost + 1 >= max_lost THEN {_LOST_ERROR} ELSE error END, "
    "finished_at = CASE WHEN lost + 1 >= max_lost THEN ? ELSE NULL END, "
    "lost = lost + 1, owner = NULL, lease_until = NULL "
    f"WHERE state = {RUNNING} AND lease_until < ?"
)
_EXPIRE = (
    "DELETE FROM tasks WHERE seq IN (SELECT seq FROM tasks "
    f"WHERE state >= {SUCCEEDED} AND finished_at < ? LIMIT ?)"
)
_PROMOTE = (
    f"UPDATE tasks SET state = {READY} WHERE seq IN (SELECT seq FROM tasks "
    f"WHERE state IN ({SCHEDULED}, {RETRYING}) AND run_at <= ? LIMIT ?)"
)
#: rows expire() deletes (promote_due() makes READY) per transaction (a few ms of the write lock)
_EXPIRE_ROWS = 5000
#: seconds between two of those transactions: longer than a waiting writer's pause
#: between its tries for the lock (_MAX_PAUSE), so that it gets in
_EXPIRE_PAUSE = 0.002
_COLUMNS = (
    "id, name, codec, priority, state, attempts, lost, run_at, enqueued_at, started_at, "
    "finished_at, result, error, progress, progress_message, owner, cancel_requested, payload"
)
#: newest first along the index of ended tasks (its condition spelled out, or SQLite
#: would not use it: a scan of every row, and a sort, per call)
_DEAD = (
    f"SELECT {_COLUMNS} FROM tasks WHERE state = {FAILED} AND state >= {SUCCEEDED} "
    "ORDER BY finished_at DESC, seq DESC LIMIT ?"
)


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """``sqlite:///rel.db?x=1`` -> ("rel.db", {"x": "1"}); ``sqlite:////abs.db`` -> "/abs.db"."""
    if not url.startswith("sqlite:///"):
        raise ValueError(
            f"Expected 'sqlite:///relative.db' or 'sqlite:////absolute/path.db' for store, "
            f"got {url!r}"
        )
    rest = url[len("sqlite:///") :]
    path, _, query = rest.partition("?")
    if not path:
        raise ValueError(f"Expected a file path after 'sqlite:///' in store, got {url!r}")
    options = dict(urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=False))
    return urllib.parse.unquote(path), options


# -- fork -------------------------------------------------------------------------------


class _ForkGate:
    """``fork()`` waits until no thread is inside SQLite and no connection is open.

    SQLite's process-wide state crosses a fork as it was.  A mutex that a thread held
    mid-call stays held in the child forever: the child's next open hangs.  And the
    lock bookkeeping of the connections open at the fork makes the child believe it
    holds file locks it does not (fcntl locks are not inherited): when the parent then
    closes its last connection it checkpoints and deletes the WAL that the child still
    writes to, and the child's commits are lost.  So every store call passes this
    gate; before a fork the gate closes, waits for the calls inside to leave, and every
    store closes its connections, which reopen on their next use.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        # thread ident -> depth of its store calls; guarded by _cond
        self._inside: dict[int, int] = {}
        # set while a fork waits or happens (new calls wait); guarded by _cond
        self._forking = False

    def __enter__(self) -> None:
        me = threading.get_ident()
        with self._cond:
            while self._forking:
                self._cond.wait()
            self._inside[me] = self._inside.get(me, 0) + 1

    def __exit__(self, *exc_info: object) -> None:
        me = threading.get_ident()
        with self._cond:
            depth = self._inside.pop(me) - 1
            if depth:
                self._inside[me] = depth
            elif self._forking:
                self._cond.notify_all()

    def before_fork(self) -> None:
        me = threading.get_ident()
        with self._cond:
            self._forking = True
            while any(ident != me for ident in self._inside):
                self._cond.wait()
            interrupted = me in self._inside
        if interrupted:  # fork() from a signal handler that interrupted a store call
            report_unraisable(
                RuntimeError("fork() interrupted a call into an SQLite store"),
                "closing SQLite connections before fork(): the child must not use the store",
            )
            return
        for store in list(_stores):
            store._drop_connections()

    def after_fork_in_parent(self) -> None:
        with self._cond:
            self._forking = False
            self._cond.notify_all()

    def after_fork_in_child(self) -> None:
        self.__init__()  # type: ignore[misc]  # the parent's threads are gone
        for store in list(_stores):
            store._new_checkpointer()  # the parent's checkpointer did not cross the fork


_GATE = _ForkGate()
# every store not yet collected: their connections close before a fork
_stores: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()
register_fork_hooks(
    before=_GATE.before_fork,
    after_in_parent=_GATE.after_fork_in_parent,
    after_in_child=_GATE.after_fork_in_child,
)

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _gated(method: _Method) -> _Method:
    """The store call runs inside the fork gate (never nested in a wait for a thread)."""

    @functools.wraps(method)
    def call(self: SQLiteStore, *args: Any, **kwargs: Any) -> Any:
        with _GATE:
            return method(self, *args, **kwargs)

    return call  # type: ignore[return-value]


class SQLiteStore(Store):
    """A ``Store`` in one SQLite file (WAL).  See the module docstring for the URL."""

    def __init__(
        self,
        url: str,
        *,
        synchronous: str | None = None,
        busy_timeout: float | None = None,
        max_lost: int | None = None,
    ) -> None:
        path, options = parse_url(url)
        unknown = sorted(set(options) - {"synchronous", "busy_timeout", "max_lost"})
        if unknown:
            raise ValueError(
                f"Unknown store option(s) {', '.join(unknown)} in {url!r}; valid options are: "
                f"synchronous, busy_timeout, max_lost"
            )
        sync = (synchronous or options.get("synchronous", "normal")).lower()
        if sync not in _SYNC:
            raise ValueError(
                f"Expected one of {', '.join(_SYNC)} for synchronous, got {sync!r} (in {url!r})"
            )
        if path == ":memory:" or path.startswith("file:"):
            # (these opened a file named so in the working folder: no process but this
            # one knew of it, and a fork's child wrote into another)
            raise ValueError(
                f"Expected a file path for store, got {url!r}: a durable store is a file "
                f"that every process opens (sqlite:////var/app/tasks.db); for tasks in "
                f"memory use Engine() without a store"
            )
        # the absolute path: a relative one would follow the process's working folder,
        # and a connection opened after a chdir() (a new thread's reader, a fork's
        # writer) would open another file; ~ is the user's home, as in a shell
        path = os.path.abspath(os.path.expanduser(path))
        query = url.partition("?")[2]
        self.url = f"sqlite:///{urllib.parse.quote(path)}" + (f"?{query}" if query else "")
        self.path = path
        self.synchronous = sync
        self.durable_on_power_loss = _SYNC[sync] >= 2
        self.busy_timeout = number_option(float, "busy_timeout", busy_timeout, options, 5.0, url)
        if not self.busy_timeout >= 0:  # nan too
            raise ValueError(
                f"Expected busy_timeout >= 0 seconds (how long a write waits for a lock "
                f"another process holds; inf waits as long as it takes), got "
                f"{self.busy_timeout!r} (in {url!r})"
            )
        self.max_lost = number_option(int, "max_lost", max_lost, options, 10, url)
        if self.max_lost < 1:
            raise ValueError(f"Expected max_lost >= 1, got {self.max_lost}")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise StoreError(f"cannot open store {url!r}: folder {folder!r} does not exist")
        # Connections open on first use and close before each fork() (see _ForkGate).
        self._lock = threading.Lock()  # guards _db, _readers and _changes
        self._db: sqlite3.Connection | None = None  # the one writing connection
        self._local = threading.local()  # per-thread reading connections (.db)
        self._readers: list[sqlite3.Connection] = []  # all of them, to close them
        self._watch: sqlite3.Connection | None = None  # only for changed(): data_version
        self._checkpoint_db: sqlite3.Connection | None = None  # the checkpointer's own
        self._closed = False
        self._new_checkpointer()
        self.checkpoints = 0  # background checkpoints done (for tests)
        self._data_version = -1
        self._changes = 0  # the writing connection's total_changes at its last commit
        # (st_dev, st_ino) of the file the writing connection opened: a commit checks that
        # the path still names it (a deleted file takes commits that nobody else sees)
        self._file_id: tuple[int, int] | None = None
        self._file_checked = -1.0  # time.monotonic() it was last seen the same (_lock)
        # leases and due times are on the machine's boot clock moved by an offset kept
        # in the file for this boot (see _shift, _ensure_lease_clock)
        self._boot, self._boot_clock = _lease_clock()
        self._lease_offset = 0.0
        with _GATE:  # a fork meanwhile waits, then finds this store among _stores
            try:
                db = self._writer()
                # opening (WAL mode, the schema) may wait behind other processes that
                # open or recover the file: SQLite's own busy handler, as before
                db.execute(f"PRAGMA busy_timeout = {_busy_ms(self.busy_timeout)}")
                db.execute("PRAGMA journal_mode = WAL")
                self._ensure_schema(db)
                db.execute("PRAGMA busy_timeout = 0")
                # a value SQLite refuses would fail the whole commit, shared by every
                # producer whose rows it holds: a submit over it is refused alone
                self.max_value = db.getlimit(sqlite3.SQLITE_LIMIT_LENGTH) - _ROW_ROOM
            except sqlite3.Error as exc:
                self._close_all()
                self._raise(exc, "open")
            except StoreError:
                self._close_all()
                raise
            _stores.add(self)

    max_value_source = "SQLite's SQLITE_MAX_LENGTH, less room for the row"

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path!r} synchronous={self.synchronous}>"

    # -- connections and errors ----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(
                self.path,
                isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
                check_same_thread=False,  # each connection is used under a lock or per thread
                timeout=self.busy_timeout,
            )
            db.execute(f"PRAGMA synchronous = {self.synchronous}")
            # commits rarely checkpoint themselves: the checkpointer thread does it
            db.execute(f"PRAGMA wal_autocheckpoint = {_AUTOCHECKPOINT_PAGES}")
        except sqlite3.Error as exc:
            self._raise(exc, "open")
        return db

    def _writer(self) -> sqlite3.Connection:
        """The writing connection (call with _lock held, or before the store is shared)."""
        db = self._db
        if db is None:
            db = self._connect()  # its first statements may wait for a recovery
            # then no busy handler: _lock_and_execute waits for the write lock itself
            try:
                db.execute("PRAGMA busy_timeout = 0")
            except sqlite3.Error as exc:
                db.close()
                self._raise(exc, "open")
            self._db = db
            self._changes = db.total_changes
            self._file_id = self._path_id()
        return db

    def _path_id(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _check_same_file(self) -> None:
        """Refuse to commit into a file that was deleted or replaced since the writing
        connection opened it: SQLite goes on writing to the open file (WAL), and what
        it commits there is lost to every other process, and to this one at its exit.
        Looked at most once per ``_FILE_CHECK_S`` (a stat() is 4% of a one-row commit):
        commits of that last moment are lost with the rows the file held before."""
        now = time.monotonic()
        if now - self._file_checked < _FILE_CHECK_S:
            return
        found = self._path_id()
        if found == self._file_id:
            self._file_checked = now
            return
        what = "deleted" if found is None else "replaced by another file"
        raise StoreError(
            f"store {self.url!r}: the file was {what} after this process opened it; "
            f"nothing more is committed to the old one (it would be lost): restart the "
            f"process to open the store anew"
        )

    def _lock_and_execute(self, db: sqlite3.Connection, sql: str, params: Any = ()) -> None:
        """Run the statement that takes the write lock, waiting while another process
        holds it, at most ``busy_timeout`` seconds.

        SQLite's own busy handler sleeps 1, 2, 5, 10 ms ... between tries.  Beside a
        worker process, one in six of a producer's commits slept 1.2 ms behind a
        commit that held the lock for ~50 us (a web endpoint lost 70% of its
        requests/s).  This tries again after 20 us, doubling up to 1 ms.
        """
        pause = 20e-6
        deadline = 0.0
        while True:
            try:
                db.execute(sql, params)
                return
            except sqlite3.OperationalError as exc:
                # SQLITE_BUSY, or an extended code of it (BUSY_RECOVERY: another
                # process rebuilds the WAL index, as two processes opening at once do)
                if getattr(exc, "sqlite_errorcode", _SQLITE_BUSY) & 0xFF != _SQLITE_BUSY:
                    raise
                now = time.monotonic()
                if not deadline:
                    deadline = now + self.busy_timeout
                elif now >= deadline:
                    raise
            _pause(pause)
            pause = min(pause * 2, _MAX_PAUSE)

    def _drop_connections(self) -> None:
        """Close every connection; each reopens on its next use.  Only the fork gate
        calls this, with no thread inside a store call."""
        self._close_all()
        self._local = threading.local()
        self._data_version = -1  # a new connection's data_version is not comparable

    def _new_checkpointer(self) -> None:
        """The checkpointer's state, before its thread starts (see _wrote)."""
        self._dirty = threading.Event()  # set by commits, cleared by the checkpointer
        self._closing = threading.Event()  # ends the checkpointer's wait at once
        self._checkpointer: threading.Thread | None = None
        self._start_lock = threading.Lock()  # guards starting the checkpointer

    def _wrote(self) -> None:
        """A commit happened: the checkpointer copies the WAL into the file soon after."""
        if not self._dirty.is_set():
            self._dirty.set()
            if self._checkpointer is None:
                with self._start_lock:  # not self._lock: _write() calls this holding it
                    if self._checkpointer is None and not self._closed:
                        dirty, closing = self._dirty, self._closing
                        # the store weakly: a store nobody uses any more (its engine
                        # dropped, shut down or not) is collected, which wakes the
                        # thread to leave
                        ref = weakref.ref(self, functools.partial(_store_gone, closing, dirty))
                        self._checkpointer = threading.Thread(
                            target=_checkpoint_loop, args=(ref, dirty, closing),
                            name="cytask-sqlite-checkpoint", daemon=True,
                        )  # fmt: skip
                        self._checkpointer.start()

    def _raise(self, exc: sqlite3.Error, what: str) -> NoReturn:
        text = str(exc)
        low = text.lower()
        if "locked" in low or "busy" in low:
            why = (
                f"the database is locked: another process held its write lock for more than "
                f"busy_timeout={self.busy_timeout} s ({text})"
            )
        elif "not a database" in low or "malformed" in low or "corrupt" in low:
            why = f"the file is not a cytask store or is corrupt ({text})"
        elif "full" in low:
            why = f"the disk is full ({text}); free space and retry"
        elif "i/o error" in low:
            why = (
                f"the file could not be written ({text}): a disk quota or a file size "
                f"limit (ulimit -f) reached, or a failing disk; see the system log"
            )
        elif "unable to open" in low or "readonly" in low or "read-only" in low:
            why = f"the file cannot be opened for writing ({text})"
        else:
            why = text
        err = StoreError(f"store {self.url!r}: {what} failed: {why}")
        # an I/O error is the disk's, not a refusal of this value (SQLite reads only
        # ENOSPC as "full": a quota or RLIMIT_FSIZE is an I/O error): the result
        # writer waits it out rather than recording a task that ran as failed
        err.transient = any(w in low for w in ("locked", "busy", "full", "i/o error"))
        raise err from exc

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction under the connection lock, rolled back on any error."""
        with self._lock:
            if self._closed:
                raise StoreError(f"store {self.url!r} is closed")
            db = self._writer()
            try:
                self._lock_and_execute(db, "BEGIN IMMEDIATE")
                self._check_same_file()  # under the write lock: nobody moves it meanwhile
                yield db
                db.execute("COMMIT")
                if db.total_changes != self._changes:
                    self._changes = db.total_changes
                    self._wrote()
            except BaseException as exc:
                if db.in_transaction:
                    with suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    self._raise(exc, what)
                raise

    def _reader(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            if self._closed:
                raise StoreError(f"store {self.url!r} is closed")
            db = self._connect()
            self._local.db = db
            with self._lock:
                self._readers.append(db)
        return db

    # -- schema ------------------------------------------------------------------------

    def _ensure_schema(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            tables = {
                row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            if not tables and app_id == 0:
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(
                    "INSERT INTO cytask_meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            else:
                if app_id != APPLICATION_ID or "cytask_meta" not in tables:
                    raise StoreError(
                        f"store {self.url!r}: {self.path!r} is an SQLite database of another "
                        f"program (tables: {', '.join(sorted(tables)) or 'none'}), not a cytask "
                        f"store; give cytask a file of its own"
                    )
                row = db.execute(
                    "SELECT value FROM cytask_meta WHERE key = 'schema_version'"
                ).fetchone()
                version = int(row[0]) if row else 0
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"store {self.url!r} has schema version {version}, written by a newer "
                        f"cytask; this cytask reads version {SCHEMA_VERSION}: upgrade cytask "
                        f"(the file was left untouched)"
                    )
                while version < SCHEMA_VERSION:
                    migrate = _MIGRATIONS.get(version)
                    if migrate is None:
                        raise StoreError(
                            f"store {self.url!r} has schema version {version}, which this cytask "
                            f"cannot migrate (it reads version {SCHEMA_VERSION}); drain it with "
                            f"the cytask that wrote it, then start a new file"
                        )
                    migrate(db)
                    version += 1
                    db.execute(
                        "UPDATE cytask_meta SET value = ? WHERE key = 'schema_version'",
                        (str(version),),
                    )
            self._ensure_lease_clock(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _ensure_lease_clock(self, db: sqlite3.Connection) -> None:
        """Read (or set, first on this boot) the offset that puts the boot clock on the
        scale of the wall clock, in the open transaction.

        Leases were compared on each process's ``time.time()``: a clock stepped forward
        (NTP at boot, ``date -s``, a VM resumed) expired every live lease at once, and
        the first worker to look recovered and ran those tasks again beside their
        running first run; stepped back, a dead worker's tasks waited that much longer.
        Due times alike: stepped forward, every task delayed by less ran at once.  The
        boot clock is never stepped.  One offset per boot, kept in the file, makes
        every process's times agree, and stays near the wall clock so that a store
        file of an older cytask (and a delay across a reboot) keeps its meaning.  A new boot (no
        process of the old one is alive) takes a new offset and ends the old leases.
        """
        if not self._boot:
            return  # no boot clock here: leases on the wall clock (offset 0)
        row = db.execute("SELECT value FROM cytask_meta WHERE key = 'lease_clock'").fetchone()
        boot, _, offset = (row[0] if row else "").partition(" ")
        if row is not None and boot == self._boot:
            self._lease_offset = float(offset)
            return
        anchor = time.time()
        if row is not None:  # written on another boot: its leases' holders are gone
            db.execute(f"UPDATE tasks SET lease_until = 0 WHERE state = {RUNNING}")
            # a wall clock behind the file's last times (a machine without a real-time
            # clock, before NTP set it) would anchor this boot's clock behind the due
            # times of the last: those tasks would wait that much (decades from 1970);
            # anchored at the last time seen, they wait at most the time it was down
            last = db.execute(
                "SELECT max(coalesce((SELECT enqueued_at FROM tasks ORDER BY seq DESC "
                "LIMIT 1), 0), coalesce((SELECT max(finished_at) FROM tasks "
                f"WHERE state >= {SUCCEEDED}), 0))"
            ).fetchone()[0]
            anchor = max(anchor, float(last))
        self._lease_offset = anchor - self._boot_clock()
        db.execute(
            "INSERT OR REPLACE INTO cytask_meta VALUES ('lease_clock', ?)",
            (f"{self._boot} {self._lease_offset!r}",),
        )

    def _shift(self) -> float:
        """What moves a wall-clock time of the caller onto the store's clock."""
        return self._boot_clock() + self._lease_offset - time.time()

    def _lease_time(self, t: float) -> float:
        """A wall-clock time of the caller (``time.time()`` + seconds) on the store's clock."""
        return t + self._shift()

    # -- the Store interface -----------------------------------------------------------

    @_gated
    def enqueue(
        self, tasks: Sequence[NewTask], *, owner: str | None = None, lease_until: float = 0.0
    ) -> None:
        now = time.time()
        shift = self._shift()  # due times and leases on the store's clock
        lease_until += shift
        rows: list[tuple[Any, ...]] = []
        for t in tasks:
            if t.run_at > now:
                rows.append(
                    (t.id, t.name, t.codec, t.payload, t.priority, SCHEDULED, t.max_lost,
                     t.run_at + shift, now, 0, None, None, None)
                )  # fmt: skip
            elif owner is not None:
                rows.append(
                    (t.id, t.name, t.codec, t.payload, t.priority, RUNNING, t.max_lost,
                     t.run_at + shift, now, 1, owner, lease_until, now)
                )  # fmt: skip
            else:
                rows.append(
                    (t.id, t.name, t.codec, t.payload, t.priority, READY, t.max_lost,
                     t.run_at + shift, now, 0, None, None, None)
                )  # fmt: skip
        if len(rows) <= _ONE_STATEMENT_ROWS:
            # one statement in autocommit: SQLite takes the write lock at its start
            # (with the busy handler), as BEGIN IMMEDIATE would, in one step instead
            # of three (each step lets go of the GIL, costly beside busy threads)
            sql = _insert_rows(len(rows))
            values = [v for row in rows for v in row]
            with self._lock:
                if self._closed:
                    raise StoreError(f"store {self.url!r} is closed")
                try:
                    db = self._writer()
                    self._check_same_file()
                    self._lock_and_execute(db, sql, values)
                except sqlite3.Error as exc:
                    self._raise(exc, "enqueue")
            self._wrote()
            return
        with self._write("enqueue") as db:
            db.executemany(_INSERT, rows)

    @_gated
    def claim(self, owner: str, n: int, lease_until: float) -> list[Claimed]:
        try:  # a read first: an idle worker's look costs no write transaction
            if not self._reader().execute(_ANY_READY).fetchall():
                return []
        except sqlite3.Error as exc:
            self._raise(exc, "claim")
        with self._write("claim") as db:
            lease = self._lease_time(lease_until)
            rows = db.execute(_CLAIM, (owner, lease, time.time(), n)).fetchall()
        rows.sort(key=lambda r: (r[5], r[0]))  # priority, then FIFO
        return [Claimed(r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows]

    @_gated
    def extend(self, owner: str, ids: Sequence[str], lease_until: float) -> int:
        held = 0
        with self._write("extend") as db:
            lease_until = self._lease_time(lease_until)
            for task_id in ids:
                held += db.execute(
                    f"UPDATE tasks SET lease_until = ? WHERE id = ? AND owner = ? "
                    f"AND state = {RUNNING}",
                    (lease_until, task_id, owner),
                ).rowcount
        return held

    @_gated
    def finish(self, owner: str, done: Sequence[Finish], now: float) -> int:
        shift = self._shift()
        rows = [
            (f.state, f.result, f.error, None if f.state == RETRYING else now,
             f.run_at + shift if f.state == RETRYING else 0.0, f.id, owner, f.attempt,
             f.attempt)
            for f in done
        ]  # fmt: skip
        with self._write("finish") as db:
            cur = db.executemany(_FINISH, rows)
        return int(cur.rowcount)

    @_gated
    def release(self, owner: str, ids: Sequence[str]) -> int:
        n = 0
        with self._write("release") as db:
            for task_id in ids:
                n += db.execute(
                    f"UPDATE tasks SET state = {READY}, owner = NULL, lease_until = NULL, "
                    f"started_at = NULL, attempts = attempts - 1 "
                    f"WHERE id = ? AND owner = ? AND state = {RUNNING}",
                    (task_id, owner),
                ).rowcount
        return n

    @_gated
    def cancel(self, task_id: str, now: float) -> bool:
        with self._write("cancel") as db:
            n = db.execute(
                f"UPDATE tasks SET state = {CANCELLED}, finished_at = ? "
                f"WHERE id = ? AND state IN ({READY}, {SCHEDULED}, {RETRYING})",
                (now, task_id),
            ).rowcount
        return n > 0

    def reopen(self) -> SQLiteStore:
        return SQLiteStore(
            self.url,
            synchronous=self.synchronous,
            busy_timeout=self.busy_timeout,
            max_lost=self.max_lost,
        )

    @_gated
    def get(self, task_id: str) -> TaskRecord | None:
        try:
            rows = (
                self._reader()
                .execute(f"SELECT {_COLUMNS} FROM tasks WHERE id = ?", (task_id,))
                .fetchall()  # to the end: a half-read statement would pin a snapshot
            )
        except sqlite3.Error as exc:
            self._raise(exc, "get")
        return _record(rows[0], self._shift()) if rows else None

    @_gated
    def request_cancel(self, task_id: str) -> bool:
        with self._write("request_cancel") as db:
            n = db.execute(
                f"UPDATE tasks SET cancel_requested = 1 WHERE id = ? AND state = {RUNNING}",
                (task_id,),
            ).rowcount
        return n > 0

    @_gated
    def cancel_requests(self, owner: str) -> list[str]:
        try:
            rows = (
                self._reader()
                .execute(
                    f"SELECT id FROM tasks WHERE state = {RUNNING} AND cancel_requested = 1 "
                    "AND owner = ?",
                    (owner,),
                )
                .fetchall()
            )
        except sqlite3.Error as exc:
            self._raise(exc, "cancel_requests")
        return [row[0] for row in rows]

    @_gated
    def set_progress(
        self,
        task_id: str,
        percent: float,
        message: str | None,
        owner: str | None = None,
        attempt: int = 0,
    ) -> None:
        with self._write("set_progress") as db:
            db.execute(
                f"UPDATE tasks SET progress = ?, progress_message = ? "
                f"WHERE id = ? AND state = {RUNNING} AND (? IS NULL OR owner = ?) "
                f"AND (? = 0 OR attempts = ?)",
                (percent, message, task_id, owner, owner, attempt, attempt),
            )

    @_gated
    def promote_due(self, now: float) -> int:
        """In transactions of ``_EXPIRE_ROWS`` rows, as ``expire`` (a million tasks
        delayed to one time held the write lock for a second at once)."""
        n = 0
        while True:
            with self._write("promote_due") as db:
                due = db.execute(_PROMOTE, (self._lease_time(now), _EXPIRE_ROWS)).rowcount
            n += due
            if due < _EXPIRE_ROWS:
                return n
            time.sleep(_EXPIRE_PAUSE)

    @_gated
    def next_due(self) -> float | None:
        try:
            row = (
                self._reader()
                .execute(f"SELECT min(run_at) FROM tasks WHERE state IN ({SCHEDULED}, {RETRYING})")
                .fetchall()[0]
            )
        except sqlite3.Error as exc:
            self._raise(exc, "next_due")
        return None if row[0] is None else float(row[0]) - self._shift()

    @_gated
    def recover_expired(self, now: float) -> int:
        with self._write("recover_expired") as db:
            return db.execute(_RECOVER, (now, self._lease_time(now))).rowcount

    @_gated
    def claim_tick(self, key: str, tick: int) -> bool:
        with self._write("claim_tick") as db:
            return (
                db.execute("INSERT OR IGNORE INTO ticks VALUES (?, ?)", (key, tick)).rowcount == 1
            )

    @_gated
    def expire(self, finished_before: float) -> int:
        """In transactions of ``_EXPIRE_ROWS`` rows, with a pause between them for the
        writers that wait: one DELETE of every expired row held the write lock ~1 s
        per million rows (workers restarted after results piled up), and every other
        process's submit failed once it waited ``busy_timeout`` for it."""
        n = 0
        while True:
            with self._write("expire") as db:
                gone = db.execute(_EXPIRE, (finished_before, _EXPIRE_ROWS)).rowcount
                if gone < _EXPIRE_ROWS:
                    cutoff = int((finished_before - TICK_KEEP_S) * 1000)
                    db.execute("DELETE FROM ticks WHERE tick < ?", (cutoff,))
            n += gone
            if gone < _EXPIRE_ROWS:
                return n
            time.sleep(_EXPIRE_PAUSE)

    @_gated
    def has_work(self) -> bool:
        try:  # three probes of the partial indexes, no scan
            return bool(self._reader().execute(_HAS_WORK).fetchall())
        except sqlite3.Error as exc:
            self._raise(exc, "has_work")

    @_gated
    def counts(self) -> dict[str, int]:
        try:
            rows = self._reader().execute("SELECT state, count(*) FROM tasks GROUP BY state")
            found = dict(rows.fetchall())
        except sqlite3.Error as exc:
            self._raise(exc, "counts")
        return {name: int(found.get(i, 0)) for i, name in enumerate(STATE_NAMES)}

    @_gated
    def changed(self) -> bool:
        try:
            if self._watch is None:
                self._watch = self._connect()
            version = self._watch.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as exc:
            self._raise(exc, "changed")
        if version != self._data_version:
            self._data_version = version
            return True
        return False

    @_gated
    def dead(self, limit: int = 100) -> list[TaskRecord]:
        try:
            rows = (
                self._reader()
                .execute(
                    _DEAD,
                    (int(limit),),
                )
                .fetchall()
            )
        except sqlite3.Error as exc:
            self._raise(exc, "dead")
        shift = self._shift()
        return [_record(row, shift) for row in rows]

    @_gated
    def requeue(self, task_id: str) -> bool:
        with self._write("requeue") as db:
            n = db.execute(
                f"UPDATE tasks SET state = {READY}, attempts = 0, lost = 0, result = NULL, "
                "cancel_requested = 0, "
                "error = NULL, started_at = NULL, finished_at = NULL, owner = NULL, "
                f"lease_until = NULL, run_at = ? WHERE id = ? AND state = {FAILED}",
                (self._lease_time(time.time()), task_id),
            ).rowcount
        return n > 0

    def watch(self) -> Watch:
        return _FileWatch(self.path)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._closing.set()  # the checkpointer wakes, sees closed, leaves
        self._dirty.set()
        with self._start_lock:
            checkpointer = self._checkpointer
        if checkpointer is not None and checkpointer is not threading.current_thread():
            checkpointer.join()  # outside the gate: the checkpointer may wait at it
        with _GATE:
            self._close_all()

    def _close_all(self) -> None:
        for db in [self._db, self._watch, self._checkpoint_db, *self._readers]:
            if db is not None:
                with suppress(sqlite3.Error):
                    db.close()
        self._db = self._watch = self._checkpoint_db = None
        self._readers.clear()


def _store_gone(closing: threading.Event, dirty: threading.Event, _: object) -> None:
    """The store was collected: its checkpointer wakes and leaves."""
    closing.set()
    dirty.set()


def _checkpoint_loop(
    ref: weakref.ref[SQLiteStore], dirty: threading.Event, closing: threading.Event
) -> None:
    """Checkpoint the WAL off the commit path: a commit that crosses SQLite's
    threshold would otherwise pay the checkpoint's fsyncs (here: half of each
    single-row commit's time).  Idle, it waits on an event: no CPU.  It holds the
    store only while it checkpoints."""
    while True:
        dirty.wait()
        store = ref()
        if store is None or store._closed:
            return
        store = None
        if closing.wait(_CHECKPOINT_EVERY):  # let commits gather
            return
        dirty.clear()
        store = ref()
        if store is None or store._closed:  # (close() may have set it before that clear)
            return
        with _GATE:
            try:
                if store._checkpoint_db is None:
                    store._checkpoint_db = store._connect()
                store._checkpoint_db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                store.checkpoints += 1
            except (sqlite3.Error, StoreError):
                pass  # busy or gone: the next round, or SQLite's own threshold
        store = None


def _record(row: Sequence[Any], shift: float) -> TaskRecord:
    """The record of a row; ``shift``: the store's clock less the wall clock."""
    rec = TaskRecord(*row[:-2])
    if rec.run_at:  # 0.0 once ended
        rec.run_at -= shift
    rec.cancel_requested = bool(row[-2])
    rec.payload = row[-1]
    return rec


def error_json(type_path: str, message: str, tb: str) -> str:
    return json.dumps({"type": type_path, "message": message, "traceback": tb})


class _FileWatch(Watch):
    """inotify on the store's folder (Linux): wakes when any process writes the WAL.

    ``fd`` is -1 where inotify is missing; the feeder then looks at the store's
    ``data_version`` 20 times a second instead.
    """

    IN_MODIFY = 0x2
    IN_CREATE = 0x100

    def __init__(self, path: str | None) -> None:
        self.fd = -1
        self._names: set[bytes] = set()
        if path is None or not hasattr(os, "O_CLOEXEC"):
            return
        try:
            # the process's own symbols include libc's (ctypes.util.find_library would
            # start a subprocess, and importing it costs a worker 5 ms of its start)
            libc = ctypes.CDLL(None, use_errno=True)
            init = libc.inotify_init1
            add = libc.inotify_add_watch
        except (OSError, AttributeError):
            return
        fd = init(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return
        folder = os.path.dirname(os.path.abspath(path)) or "."
        if add(fd, os.fsencode(folder), self.IN_MODIFY | self.IN_CREATE) < 0:
            os.close(fd)
            return
        base = os.fsencode(os.path.basename(path))
        self._names = {base, base + b"-wal"}
        self.fd = fd

    def drain(self) -> bool:
        """Read the pending events; True if one was about the store's files."""
        hit = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except (BlockingIOError, OSError):
                return hit
            pos = 0
            while pos + 16 <= len(data):
                _, _, _, length = struct.unpack_from("iIII", data, pos)
                name = data[pos + 16 : pos + 16 + length].rstrip(b"\0")
                hit = hit or name in self._names
                pos += 16 + length

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
