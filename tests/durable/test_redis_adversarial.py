"""The Redis store attacked at its edges, with real parts only: a private redis-server
(with a password, on a unix socket, restarted), real ``cytask worker`` processes
stopped and killed.  Each test failed on the code before its fix."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _adversarial import (
    TASKS,
    a_worker_ahead_takes_no_live_lease,
    oversized_turn,
    start_worker,
    until,
)
from _redis_server import RedisServer, persistent_server

from cytask import Engine, StoreError
from cytask._store import SUCCEEDED, TICK_KEEP_S, Finish, NewTask, open_store

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server with a password, listening on TCP and on a unix socket."""
    folder = tmp_path / "redis"
    folder.mkdir()
    s = RedisServer(
        str(folder), extra=("--requirepass", "sekret", "--unixsocket", str(folder / "r.sock"))
    )
    s.start()
    try:
        yield s
    finally:
        s.stop(kill=True)


def test_refused_credentials_fail_at_once_naming_the_fix(locked: RedisServer) -> None:
    # Before: redis-py's AuthenticationError is a ConnectionError, so a wrong or missing
    # password was retried for retry_for (forever with retry_for=inf: a worker hung)
    # and then reported as "Redis was unreachable ... start it"
    base = f"127.0.0.1:{locked.port}/0?retry_for=8"
    for url in (f"redis://{base}", f"redis://:wrong@{base}", f"redis://someone:pw@{base}"):
        t0 = time.monotonic()
        with pytest.raises(StoreError, match=r"refused the credentials.*redis://user:password@"):
            open_store(url)
        assert time.monotonic() - t0 < 5, url
    with pytest.raises(StoreError, match=r"database number 99 in the store URL"):
        open_store(f"redis://:sekret@127.0.0.1:{locked.port}/99")
    store = open_store(f"redis://:sekret@{base}")
    assert store.counts()["pending"] == 0
    store.close()


def test_a_unix_socket_url_opens(locked: RedisServer) -> None:
    # Before: unix:///path became unix:/path (urlunsplit drops "//" without a host),
    # which redis-py refused; and unix sockets refuse socket_keepalive
    sock = Path(locked.folder) / "r.sock"
    store = open_store(f"unix://:sekret@{sock}?db=3&prefix=u")
    try:
        assert store.counts()["pending"] == 0
        assert store._redis.connection_pool.connection_kwargs["db"] == 3  # type: ignore[attr-defined]
    finally:
        store.close()
    with pytest.raises(StoreError, match="No such file"):
        open_store(f"unix://{sock}.missing?retry_for=0.1")


def test_a_worker_stopped_past_its_lease_never_writes_an_older_attempts_result(
    tmp_path: Path, url: str
) -> None:
    # SIGSTOP a worker while it runs a task, past its lease; another process recovers
    # the task (READY again); SIGCONT: the same worker claims it again (attempt 2)
    # while its first run is still going.  Before: the first run's end passed the
    # owner check (same process) and was committed as the task's result, with
    # attempts == 2, and the second run then ran after that result was committed;
    # the worker's count of leases it held also drifted by one per such task.
    (tmp_path / "advtasks.py").write_text(TASKS)
    go = tmp_path / "go"
    store = open_store(url)
    reader = Engine(workers=0, store=url)
    worker = start_worker(tmp_path, url, "--workers", "1", "--lease", "0.5")
    try:
        payload = json.dumps([[str(go)], {}])
        store.enqueue([NewTask("held1", "adv.held", "json", payload, 2, 0.0, 10)])
        until("the first run started", Path(f"{go}.started1").exists)
        worker.send_signal(signal.SIGSTOP)
        # another worker's feeder, once the lease passed: the task goes back
        until("the lease expired", lambda: store.recover_expired(time.time()) == 1)
        rec = store.get("held1")
        assert rec is not None and rec.status == "pending" and rec.attempts == 1
        worker.send_signal(signal.SIGCONT)

        def claimed_again() -> bool:
            r = store.get("held1")
            return r is not None and r.status == "running" and r.attempts == 2

        until("the worker claimed the task again", claimed_again)
        go.touch()  # the first run ends now, the second after it (one worker thread)
        h = reader.get("held1")
        assert h is not None
        assert h.result(timeout=30) == 2, "the result of attempt 1 was written over attempt 2"
        assert h.attempts == 2
        until("the second run started", Path(f"{go}.started2").exists)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, (tmp_path / "worker.log").read_text()
        rec = store.get("held1")
        assert rec is not None and rec.status == "succeeded" and rec.result == "2"
        assert store.counts()["running"] == 0
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGCONT)
            worker.kill()
            worker.wait(30)
        reader.shutdown()
        store.close()


def test_a_worker_stopped_past_its_lease_keeps_what_nobody_took(
    tmp_path: Path, redis_url: str
) -> None:
    # SIGSTOP past the lease, SIGCONT, and no other process recovered the task
    # meanwhile: the lease is still the worker's.  Before: its feeder recovered its own
    # expired leases before it extended them, so it put its running task back, ran it
    # a second time beside the first, and counted it lost (max_lost dead-letters it)
    import redis

    (tmp_path / "advtasks.py").write_text(TASKS)
    go = tmp_path / "go"
    prefix = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(redis_url).query))["prefix"]
    client = redis.Redis.from_url(redis_url.partition("?")[0])
    store = open_store(redis_url)
    worker = start_worker(tmp_path, redis_url, "--workers", "2", "--lease", "0.5")
    try:
        payload = json.dumps([[str(go)], {}])
        store.enqueue([NewTask("held2", "adv.held", "json", payload, 2, 0.0, 10)])
        until("the first run started", Path(f"{go}.started1").exists)
        worker.send_signal(signal.SIGSTOP)
        stopped = time.time()  # no extension after this: the lease ends by stopped + 0.5
        until("the lease passed", lambda: time.time() > stopped + 0.6)
        lease_until = float(client.hget(f"{prefix}:t:held2", "lu") or 0)
        assert lease_until < time.time()
        worker.send_signal(signal.SIGCONT)

        def maintained() -> bool:  # extended, or (before) recovered and claimed again
            r = store.get("held2")
            lu = float(client.hget(f"{prefix}:t:held2", "lu") or 0)
            return r is not None and (lu > lease_until or r.attempts > 1)

        until("the worker's feeder ran its maintenance", maintained)
        go.touch()
        until("the task ended", lambda: store.get("held2").terminal)  # type: ignore[union-attr]
        rec = store.get("held2")
        assert rec is not None and (rec.attempts, rec.lost) == (1, 0), (rec.attempts, rec.lost)
        assert rec.result == "1" and not Path(f"{go}.started2").exists()
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGCONT)
            worker.kill()
            worker.wait(30)
        store.close()
        client.close()


def test_a_lease_too_short_to_extend_is_refused(url: str) -> None:
    # Before: lease=0.02 was taken, while leases were extended every 50 ms at best: with
    # two engines on one store a live worker's 0.5 s task ran 3 times (SQLite), or was
    # dead-lettered as "its worker died 10 times" (Redis), every worker alive
    with pytest.raises(ValueError, match=r"Expected lease >= 0\.1 seconds .* got 0\.02"):
        Engine(workers=1, store=url, lease=0.02)
    Engine(workers=1, store=url, lease=0.1).shutdown()  # the shortest: extended every 33 ms


def test_a_fork_child_keeps_the_stores_keyword_options(url: str, tmp_path: Path) -> None:
    # Before: the child's runtime reopened the store from its URL alone: a store made
    # with prefix="..." put the child's tasks under the default prefix, where the
    # parent (and every worker of that prefix) never saw them; retry_for, max_lost,
    # synchronous and busy_timeout fell back to their defaults too
    if url.startswith("redis"):
        base, _, query = url.partition("?")
        prefix = dict(urllib.parse.parse_qsl(query))["prefix"]
        options = {"prefix": f"{prefix}-kw", "retry_for": 3.0, "max_lost": 4}
        url = base
    else:
        options = {"synchronous": "full", "busy_timeout": 7.0, "max_lost": 4}
    code = f"""
        import os, warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads
        from cytask import Engine
        from cytask._store import open_store

        options = {options!r}
        store = open_store({url!r}, **options)
        eng = Engine(workers=0, store=store)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            mine = eng._durable.store
            same = all(getattr(mine, k) == v for k, v in options.items())
            h = eng.submit(max, 1, 2)
            os.write(w, (h.task_id if same and mine is not store else "differs").encode())
            os._exit(0)
        got = os.read(r, 64).decode()
        os.waitpid(pid, 0)
        assert got != "differs", "the child's store lost its options"
        rec = store.get(got)
        assert rec is not None, "the child's task went elsewhere"
        assert rec.name == "builtins.max"
        eng.shutdown()
        print("ok")
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr


@pytest.fixture
def small(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server that takes no value over 1 MB (proto-max-bulk-len)."""
    folder = tmp_path / "redis"
    folder.mkdir()
    s = RedisServer(str(folder), extra=("--proto-max-bulk-len", "1mb"))
    s.start()
    try:
        yield s
    finally:
        s.stop(kill=True)


def test_a_result_the_server_refuses_fails_its_task_and_stalls_nothing(
    small: RedisServer, tmp_path: Path
) -> None:
    # Before: the writer retried the batch holding the refused result forever ("will
    # retry"), so that task and every later result of the worker stayed uncommitted:
    # their leases were extended forever, and the worker ran on, committing nothing
    (tmp_path / "advtasks.py").write_text(TASKS)
    url = small.url("big")
    producer = Engine(workers=0, store=url)
    worker = start_worker(tmp_path, url, "--workers", "2")
    try:
        sys.path.insert(0, str(tmp_path))
        import advtasks  # type: ignore[import-not-found]

        with pytest.raises(ValueError, match=r"at most 1048576 bytes .*got 20000\d\d bytes"):
            producer.submit(advtasks.echo, "y" * 2_000_000)  # the producer is told at once
        before = producer.submit_many(advtasks.echo, [(i,) for i in range(50)])
        huge = producer.submit(advtasks.big, 2_000_000)
        after = producer.submit_many(advtasks.echo, [(i,) for i in range(50, 300)])
        assert [h.result(timeout=20) for h in before + after] == list(range(300))
        with pytest.raises(Exception, match=r"refused to record the end .*larger than"):
            huge.result(timeout=20)
        assert huge.status.value == "failed" and huge.attempts == 1
        assert producer.submit(advtasks.big, 1000).result(timeout=20) == "x" * 1000
        assert worker.poll() is None
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("advtasks", None)
        worker.kill()
        worker.wait(30)
        producer.shutdown()


def test_an_oversized_submit_fails_alone_not_the_requests_sharing_its_commit(
    small: RedisServer,
) -> None:
    # Every request an event loop serves in one turn shares one commit (asubmit).
    # Before: one request's arguments over the server's proto-max-bulk-len failed
    # that commit, and every other request of the turn got its StoreError

    producer = Engine(workers=0, store=small.url("turn"))
    try:
        first, big, last = oversized_turn(producer)
        assert not isinstance(first, BaseException), first  # before: the big one's error
        assert not isinstance(last, BaseException), last
        assert isinstance(big, ValueError) and "proto-max-bulk-len" in str(big), big
        assert producer.get(first.task_id) is not None and producer.get(last.task_id) is not None
        # the server's limit raised since the store opened: the next submit sees it
        import redis

        client = redis.Redis(port=small.port)
        client.config_set("proto-max-bulk-len", 1024 * 1024 * 1024)
        assert producer.submit(max, "y" * 2_000_000, "z").task_id
        client.close()
    finally:
        producer.shutdown()


def test_a_periodic_tick_is_remembered_past_a_zero_result_ttl(url: str) -> None:
    # Before: expire() forgot ticks older than the results' cutoff, so with
    # result_ttl=0 an engine's maintenance right after a tick forgot it, and another
    # engine whose timer fired a moment later claimed that tick again: two runs
    a, b = open_store(url), open_store(url)
    try:
        tick = int(time.time() * 1000)
        assert a.claim_tick("every 60", tick)
        # result_ttl=0, maintenance 10 ms after the tick: every ended task goes, the
        # tick stays for an engine whose timer fires later than that
        a.expire(tick / 1000 + 0.01)
        assert not b.claim_tick("every 60", tick), "the tick ran twice"
        a.expire(time.time() + TICK_KEEP_S + 1)  # long past: forgotten
        assert b.claim_tick("every 60", tick)
    finally:
        a.close()
        b.close()


@pytest.fixture
def persistent(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server with an fsync per write: a restart keeps what it acknowledged."""
    yield from persistent_server(tmp_path)


def test_sigterm_with_redis_down_drains_within_the_deadline(
    persistent: RedisServer, tmp_path: Path
) -> None:
    # Before: with Redis down, every store call of the drain (the feeder's, the
    # result writer's, the give-back) waited retry_for before it failed, the writer
    # about 8 times: with retry_for=inf the worker never exited on SIGTERM, with the
    # default 10 s it took minutes past --drain-timeout.  Now the drain gives up on
    # Redis at its deadline; the task's lease brings it back once Redis is
    (tmp_path / "advtasks.py").write_text(TASKS)
    url = persistent.url("drain", retry_for="inf")
    started = tmp_path / "started"
    store = open_store(url)
    payload = json.dumps([[0.5, str(started)], {}])
    store.enqueue([NewTask("nap1", "adv.nap", "json", payload, 2, 0.0, 10)])
    store.close()
    worker = start_worker(tmp_path, url, "--workers", "1", "--lease", "1", "--drain-timeout", "2")
    try:
        until("the task started", started.exists)
        persistent.stop(kill=True)
        t0 = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        try:
            rc = worker.wait(20)
        except subprocess.TimeoutExpired:
            pytest.fail("the worker did not exit on SIGTERM while Redis was down")
        assert rc == 0, (tmp_path / "worker.log").read_text()[-2000:]
        assert time.monotonic() - t0 < 10
        persistent.start()  # the task is still leased to the stopped worker: it comes back
        again = start_worker(tmp_path, url, "--workers", "1", "--lease", "1", "--burst")
        assert again.wait(60) == 0, (tmp_path / "worker.log").read_text()[-2000:]
        store = open_store(url)
        rec = store.get("nap1")
        store.close()
        assert rec is not None and rec.status == "succeeded" and rec.result == "0.5"
        assert (rec.attempts, rec.lost) == (2, 1)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)


def test_a_worker_whose_clock_runs_ahead_takes_no_live_lease(
    tmp_path: Path, redis_url: str
) -> None:
    # Before: leases were compared on the clients' clocks.  A worker whose clock ran a
    # minute ahead found every other worker's lease expired at its first maintenance,
    # and ran their tasks a second time while they ran (a clock a minute behind lost
    # its own leases alike).  Now leases are on the Redis server's clock
    a_worker_ahead_takes_no_live_lease(tmp_path, redis_url)


def test_a_redis_that_evicts_keys_is_refused(tmp_path: Path) -> None:
    # Before: a cache's Redis (maxmemory-policy allkeys-lru) took the store, and under
    # memory pressure evicted task hashes and the counts: with maxmemory 3mb, 18,370
    # of 20,000 acknowledged submits vanished (get() None), and no call said a word
    import redis

    folder = tmp_path / "redis"
    folder.mkdir()
    cache = RedisServer(
        str(folder), extra=("--maxmemory", "3mb", "--maxmemory-policy", "allkeys-lru")
    )
    cache.start()
    try:
        with pytest.raises(StoreError, match=r"maxmemory-policy allkeys-lru.*noeviction"):
            Engine(workers=0, store=cache.url("evict"))
        client = redis.Redis(port=cache.port)
        client.config_set("maxmemory-policy", "volatile-lru")  # keys without a TTL stay
        client.close()
        eng = Engine(workers=0, store=cache.url("evict"))
        hs: list[Any] = []
        with pytest.raises(StoreError, match="used memory > 'maxmemory'") as full:
            for _ in range(40):  # full: said, not lost
                hs += eng.submit_many(max, [(i, "x" * 200) for i in range(500)])
        assert full.value.transient  # a result writer waits for room, keeps its results
        assert len(hs) >= 500 and sum(eng.get(h.task_id) is None for h in hs) == 0
        eng.shutdown()
    finally:
        cache.stop(kill=True)


def test_two_apps_on_one_prefix_are_told_to_take_a_prefix_each(
    tmp_path: Path, redis_url: str
) -> None:
    # Two deployments on one prefix: a worker of one claims the other's tasks and fails
    # them (an unknown task is never retried forever).  The failure says why and what
    # to do, instead of only "start it with the module"
    (tmp_path / "advtasks.py").write_text(TASKS)
    store = open_store(redis_url)
    try:
        store.enqueue([NewTask("other", "otherapp.job", "json", "[[], {}]", 2, 0.0, 10)])
        worker = start_worker(tmp_path, redis_url, "--workers", "1", "--burst")
        assert worker.wait(60) == 0, (tmp_path / "worker.log").read_text()
        rec = store.get("other")
        assert rec is not None and rec.status == "failed" and rec.error is not None
        assert "no task named 'otherapp.job'" in rec.error and "Redis prefix" in rec.error
    finally:
        store.close()


def test_a_resumed_worker_never_starts_a_task_another_worker_now_holds(
    tmp_path: Path, url: str
) -> None:
    # A worker holds a running task and one claimed ahead; SIGSTOP past the lease;
    # another worker recovers and claims both (a valid lease); SIGCONT.  Before: the
    # resumed worker started the task it had claimed ahead once its thread was free,
    # while the new owner's lease on it was valid (two runs at once)
    (tmp_path / "advtasks.py").write_text(TASKS)
    go1, go2, go3 = (tmp_path / f"go{i}" for i in (1, 2, 3))
    go2.touch()
    go3.touch()
    store = open_store(url)
    worker = start_worker(tmp_path, url, "--workers", "1", "--lease", "0.5", "--result-ttl", "1")
    try:
        store.enqueue(
            [NewTask(f"t{i}", "adv.held", "json", json.dumps([[str(go)], {}]), 2, 0.0, 10)
             for i, go in ((1, go1), (2, go2))]
        )  # fmt: skip
        until("the first task runs", Path(f"{go1}.started1").exists)
        until("the second is claimed ahead", lambda: store.counts()["running"] == 2)
        worker.send_signal(signal.SIGSTOP)
        until("the leases expired", lambda: store.recover_expired(time.time()) == 2)
        assert sorted(c.id for c in store.claim("other", 5, time.time() + 60)) == ["t1", "t2"]
        # a task that ended long ago: the worker's maintenance expires it, which tells
        # that its maintenance ran after it resumed
        marker = NewTask("marker", "adv.echo", "json", "[[1], {}]", 2, 0.0, 10)
        store.enqueue([marker], owner="test", lease_until=time.time() + 30)
        assert store.finish("test", [Finish("marker", SUCCEEDED, result="1")], time.time() - 10)
        worker.send_signal(signal.SIGCONT)
        until("the worker's maintenance ran", lambda: store.get("marker") is None)
        go1.touch()  # its thread is free now: the next in its queue would start
        # a third task, queued behind the second (lower priority): once it ran, the
        # second would have started before it
        store.enqueue([NewTask("t3", "adv.held", "json", json.dumps([[str(go3)], {}]), 3,
                               0.0, 10)])  # fmt: skip
        until("the third task ran", lambda: store.get("t3").terminal)  # type: ignore[union-attr]
        assert not Path(f"{go2}.started1").exists(), "t2 ran beside its new owner's lease"
        assert store.finish("other", [Finish(t, SUCCEEDED, result="0") for t in ("t1", "t2")],
                            time.time()) == 2  # fmt: skip
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGCONT)
            worker.kill()
            worker.wait(30)
        store.close()


def test_a_lease_of_years_leaves_the_feeder_working(tmp_path: Path, redis_url: str) -> None:
    # Before: the feeder slept until its next maintenance, lease/3 away: with --lease
    # 1e11 (finite, so accepted) select() overflowed time_t at its first sleep, and the
    # feeder failed and restarted every 0.5 s, reporting it
    (tmp_path / "advtasks.py").write_text(TASKS)
    producer = Engine(workers=0, store=redis_url)
    worker = start_worker(tmp_path, redis_url, "--workers", "1", "--lease", "1e11")
    try:
        sys.path.insert(0, str(tmp_path))
        import advtasks  # type: ignore[import-not-found]

        assert producer.submit(advtasks.echo, 7).result(timeout=30) == 7
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        log = (tmp_path / "worker.log").read_text()
        assert "will retry" not in log and "Overflow" not in log, log[-2000:]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("advtasks", None)
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)
        producer.shutdown()


def test_redis_down_longer_than_a_lease_leaves_a_live_worker_its_task(
    persistent: RedisServer, tmp_path: Path
) -> None:
    # Redis stopped past a running task's lease, then back: nobody else took the task,
    # so its worker keeps it.  Before: the worker's first maintenance recovered its own
    # lapsed lease before extending it, ran the task a second time beside the first,
    # and counted it lost (max_lost of those dead-lettered a healthy task)
    (tmp_path / "advtasks.py").write_text(TASKS)
    url = persistent.url("down", retry_for="inf")
    go = tmp_path / "go"
    store = open_store(url)
    worker = start_worker(tmp_path, url, "--workers", "2", "--lease", "1", "--result-ttl", "1")
    try:
        payload = json.dumps([[str(go)], {}])
        store.enqueue([NewTask("held4", "adv.held", "json", payload, 2, 0.0, 10)])
        until("the task runs", Path(f"{go}.started1").exists)
        persistent.stop()  # SIGTERM: Redis writes its files and exits
        down = time.time()
        until("the lease passed", lambda: time.time() > down + 1.5)
        persistent.start()
        marker = NewTask("marker", "adv.echo", "json", "[[1], {}]", 2, 0.0, 10)
        store.enqueue([marker], owner="test", lease_until=time.time() + 30)
        assert store.finish("test", [Finish("marker", SUCCEEDED, result="1")], time.time() - 10)
        until("the worker's maintenance ran", lambda: store.get("marker") is None)
        go.touch()
        until("the task ended", lambda: store.get("held4").terminal)  # type: ignore[union-attr]
        rec = store.get("held4")
        assert rec is not None and (rec.result, rec.attempts, rec.lost) == ("1", 1, 0)
        assert not Path(f"{go}.started2").exists()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)
        store.close()


def test_progress_from_a_run_that_lost_its_lease_is_dropped(url: str) -> None:
    # Before: set_progress checked only that the task was running, so a run resumed
    # past its lease (SIGSTOP) wrote its stale progress over the run that took over
    store = open_store(url)
    try:
        store.enqueue([NewTask("p1", "mod.fn", "json", "[[], {}]", 2, 0.0, 10)])
        (first,) = store.claim("a", 1, time.time() - 1)  # its lease lapsed at once
        assert store.recover_expired(time.time()) == 1
        (second,) = store.claim("b", 1, time.time() + 30)
        assert (first.attempts, second.attempts) == (1, 2)
        store.set_progress("p1", 20.0, "b's", "b", 2)
        store.set_progress("p1", 90.0, "stale", "a", 1)  # the old run, resumed
        rec = store.get("p1")
        assert rec is not None and (rec.progress, rec.progress_message) == (20.0, "b's")
        store.set_progress("p1", 10.0, "stale", "b", 1)  # the same owner, an older attempt
        store.set_progress("p1", 30.0, None)  # anyone's handle (no run named): as before
        rec = store.get("p1")
        assert rec is not None and (rec.progress, rec.progress_message) == (30.0, None)
    finally:
        store.close()
