"""The peers' known failures, each tried on both stores (SQLite and a real Redis).

- Celery: a task delayed past the visibility timeout runs twice.
- Dramatiq: redelivery after SIGKILL ignores the retry limit (a poison pill loops).
- django-tasks' database worker: a task stays "running" forever after its worker died.
- and ours: a task longer than its lease is not run again while its worker lives,
  also a compiled task that runs without the GIL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cytask
from cytask import Engine, TaskStatus, task
from cytask._store import SUCCEEDED, NewTask, open_store

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

_runs: list[str] = []
_runs_lock = threading.Lock()


def _record(tag: str) -> None:
    with _runs_lock:
        _runs.append(tag)


@task(name="guarantees.slow")
def slow(seconds: float) -> float:
    _record("slow")
    time.sleep(seconds)
    return seconds


def later() -> float:
    _record("later")
    return time.time()


@task(name="guarantees.spin", compile_to_c=True)
def spin(n: int) -> int:
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1_000_003
    return acc


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    made: list[Engine] = []
    _runs.clear()
    yield made
    for eng in made:
        eng.shutdown(wait=True, timeout=30)


def test_a_task_longer_than_its_lease_runs_once_while_its_worker_lives(
    engines: list[Engine], url: str
) -> None:
    lease = 0.2
    a = Engine(store=url, workers=1, lease=lease)
    b = Engine(store=url, workers=1, lease=lease)  # would take it over if a's lease lapsed
    engines += [a, b]
    h = a.submit(slow, 8 * lease)  # claimed by a at once; b's feeder recovers expired leases
    assert h.result(timeout=30) == 8 * lease
    assert _runs == ["slow"] and h.attempts == 1


def test_a_compiled_task_without_the_gil_keeps_its_lease(engines: list[Engine], url: str) -> None:
    from cytask._compile import compile_now

    assert compile_now(spin).backend != "python", spin.fallback_reason  # before the clock
    lease = 0.2
    a = Engine(store=url, workers=1, lease=lease)
    b = Engine(store=url, workers=1, lease=lease)
    engines += [a, b]
    t0 = time.perf_counter()
    h = a.submit(spin, 400_000_000)
    got = h.result(timeout=120)
    took = time.perf_counter() - t0
    assert isinstance(got, int) and 0 <= got < 1_000_003
    assert took > 3 * lease, f"the task took {took:.2f} s: too short to cross its lease"
    assert h.attempts == 1, "another engine ran it: its lease lapsed while it ran"


def test_a_delay_longer_than_the_lease_runs_once(engines: list[Engine], url: str) -> None:
    lease = 0.2
    a = Engine(store=url, workers=1, lease=lease)
    b = Engine(store=url, workers=1, lease=lease)
    engines += [a, b]
    t0 = time.time()
    h = task(engine=a)(later).apply_async(countdown=6 * lease)
    ran_at = h.result(timeout=30)
    assert ran_at >= t0 + 6 * lease
    a.shutdown()
    b.shutdown()  # every feeder stopped: nothing can run it later
    assert _runs == ["later"] and h.attempts == 1


POISON = textwrap.dedent("""
    import os, signal
    from cytask import current_task, task

    @task(name="poison.pill")
    def pill(flag: str) -> str:
        if os.path.exists(flag):
            os.kill(os.getpid(), signal.SIGKILL)   # the worker process dies mid-task
        return f"attempt {current_task().attempt}"
""")


def _worker(root: Path, url: str, *extra: str) -> tuple[int, str]:
    """Run ``cytask worker poison`` to its end: (exit status, stderr)."""
    out = subprocess.run(
        [sys.executable, "-m", "cytask", "worker", "poison", "--store", url, "--quiet",
         "--workers", "1", "--lease", "0.3", *extra],
        cwd=root, env=dict(os.environ, PYTHONPATH=str(root)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60,
    )  # fmt: skip
    return out.returncode, out.stderr


def _with(url: str, option: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{option}"


def test_a_poison_pill_is_dead_lettered_after_max_lost_and_can_be_requeued(
    tmp_path: Path, url: str, engines: list[Engine]
) -> None:
    (tmp_path / "poison.py").write_text(POISON)
    flag = tmp_path / "kill-me"
    flag.touch()
    url = _with(url, "max_lost=2")
    sys.path.insert(0, str(tmp_path))
    try:
        import poison  # type: ignore[import-not-found]

        producer = Engine(store=url, workers=0)
        engines.append(producer)
        h = producer.submit(poison.pill, str(flag))
        ends = []
        while h.status is not TaskStatus.FAILED:
            assert len(ends) < 5, f"the poison pill keeps being redelivered: {ends}"
            rc, err = _worker(tmp_path, url, "--burst")  # until the store has no work
            assert rc in (0, -signal.SIGKILL), err
            ends.append(rc)
        # max_lost=2: the next worker after the second death dead-letters it, runs nothing
        assert ends == [-signal.SIGKILL, -signal.SIGKILL, 0]
        (dead,) = producer.dead_letters()
        assert dead.task_id == h.task_id and dead.status is TaskStatus.FAILED
        with pytest.raises(cytask.TaskFailed, match=r"WorkerLost.*2 times"):
            dead.result(0)
        flag.unlink()  # fixed: run it again
        assert producer.requeue(h.task_id) and not producer.requeue(h.task_id)
        rc, err = _worker(tmp_path, url, "--burst")
        assert rc == 0, err
        assert h.result(timeout=10) == "attempt 1" and producer.dead_letters() == []
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("poison", None)


def test_a_task_never_stays_running_after_its_worker_died(tmp_path: Path, url: str) -> None:
    (tmp_path / "poison.py").write_text(POISON)
    flag = tmp_path / "kill-me"
    flag.touch()
    store = open_store(url)
    try:
        payload = f'[["{flag}"], {{}}]'
        store.enqueue([NewTask("t1", "poison.pill", "json", payload, 2, 0.0, 10)])
        assert _worker(tmp_path, url)[0] == -signal.SIGKILL
        rec = store.get("t1")
        assert rec is not None and rec.status == "running"  # its worker is gone
        flag.unlink()
        rc, err = _worker(tmp_path, url, "--burst")  # recovers the lapsed lease, runs it
        assert rc == 0, err
        rec = store.get("t1")
        assert rec is not None and rec.state == SUCCEEDED and (rec.attempts, rec.lost) == (2, 1)
        assert store.counts()["running"] == 0
    finally:
        store.close()


def test_dead_letters_need_a_store_and_check_their_arguments(url: str) -> None:
    eng = cytask.Engine(workers=1)
    try:
        with pytest.raises(ValueError, match="needs a store"):
            eng.dead_letters()
        with pytest.raises(ValueError, match="needs a store"):
            eng.requeue("x")
    finally:
        eng.shutdown()
    stored = cytask.Engine(workers=0, store=url)
    try:
        with pytest.raises(ValueError, match="Expected an int >= 1 for limit"):
            stored.dead_letters(0)
        with pytest.raises(TypeError, match="Expected str for task_id, got int"):
            stored.requeue(7)  # type: ignore[arg-type]
        assert stored.dead_letters() == [] and not stored.requeue("no-such-task")
    finally:
        stored.shutdown()


def cooperative(started: str) -> str:
    open(started, "w").close()
    me = cytask.current_task()
    deadline = time.monotonic() + 60
    while not me.cancel_requested:
        assert time.monotonic() < deadline, "no cancel request came"
        time.sleep(0.005)
    return "stopped"


def test_cancel_from_another_process_reaches_the_running_task(
    engines: list[Engine], url: str, tmp_path: Path
) -> None:
    runner = Engine(store=url, workers=1)
    other = Engine(store=url, workers=0)  # another process, as far as the store knows
    engines += [runner, other]
    started = tmp_path / "started"
    h = runner.submit(cooperative, str(started))
    while not started.exists():
        time.sleep(0.005)
    mine = other.get(h.task_id)
    assert mine is not None and not mine.cancel_requested
    assert mine.cancel() is False  # running: a request, not a cancellation
    assert mine.cancel_requested
    assert h.result(timeout=30) == "stopped"  # the worker told the task


def test_an_idle_worker_uses_no_cpu_and_wakes_for_work(engines: list[Engine], url: str) -> None:
    worker = Engine(store=url, workers=2)
    producer = Engine(store=url, workers=0)
    engines += [worker, producer]
    assert producer.submit(max, 1, 2).result(timeout=30) == 2  # both up and connected
    t0, c0 = time.monotonic(), time.process_time()
    time.sleep(1.0)  # the window measured: nothing to do
    cpu = (time.process_time() - c0) / (time.monotonic() - t0)
    assert cpu < 0.05, f"an idle worker used {cpu:.0%} of a core (polling?)"
    t0 = time.monotonic()
    assert producer.submit(max, 3, 4).result(timeout=30) == 4
    assert time.monotonic() - t0 < 1.0, "the idle worker did not wake for the task"


def _whose() -> str:
    time.sleep(0.03)
    return cytask.current_task()._rt.owner  # type: ignore[attr-defined,no-any-return]


def test_long_tasks_are_shared_by_idle_worker_processes(engines: list[Engine], url: str) -> None:
    a = Engine(store=url, workers=1)
    b = Engine(store=url, workers=1)  # another process, as far as the store knows
    producer = Engine(store=url, workers=0)
    engines += [a, b, producer]
    handles = producer.submit_many(_whose, [() for _ in range(40)])
    owners = [h.result(timeout=60) for h in handles]
    per = {o: owners.count(o) for o in set(owners)}
    assert len(per) == 2 and min(per.values()) >= 10, per  # not one holding them all


async def _nap(seconds: float) -> float:
    import asyncio

    await asyncio.sleep(seconds)
    return seconds


def test_async_tasks_are_claimed_ahead_as_deep_as_they_run(engines: list[Engine], url: str) -> None:
    worker = Engine(store=url, workers=1)
    producer = Engine(store=url, workers=0)
    engines += [worker, producer]
    t0 = time.monotonic()
    handles = producer.submit_many(_nap, [(0.5,) for _ in range(40)])
    assert [h.result(timeout=60) for h in handles] == [0.5] * 40
    took = time.monotonic() - t0
    # they await together on the loop: one worker thread does not make them take turns
    assert took < 5.0, f"40 async naps of 0.5 s took {took:.1f} s"


def test_an_engine_that_only_produces_subscribes_to_nothing(redis_server: Any) -> None:
    import redis

    url = redis_server.url("subs")
    client = redis.Redis(port=redis_server.port)
    producer = Engine(store=url, workers=0)
    try:
        producer.submit(max, 1, 2)
        assert client.pubsub_numsub("subs:wake") == [(b"subs:wake", 0)]
        worker = Engine(store=url, workers=1)
        try:
            assert client.pubsub_numsub("subs:wake") == [(b"subs:wake", 1)]
        finally:
            worker.shutdown()
    finally:
        producer.shutdown()
        client.close()


_async_started = threading.Event()


@task(name="guarantees.long_async")
async def long_async(seconds: float) -> str:
    import asyncio

    _record("long_async")
    _async_started.set()
    await asyncio.sleep(seconds)
    return "finished"


def test_an_async_task_cut_off_by_shutdown_runs_again(engines: list[Engine], url: str) -> None:
    # shutdown(timeout) cancels an async task still running at its deadline.  Before,
    # the store recorded that as the task's own failure (CancelledError, for good),
    # while a plain task cut off the same way ran again after its lease.  Now it goes
    # back at once, as a task whose worker died: lost once, delivered again
    _async_started.clear()
    first = Engine(workers=1, store=url)
    h = first.submit(long_async, 0.3)
    assert _async_started.wait(30)
    first.shutdown(wait=True, timeout=0.05)
    store = open_store(url)
    try:
        rec = store.get(h.task_id)
        assert rec is not None and rec.status == "pending", (rec.status, rec.error)
        assert (rec.attempts, rec.lost) == (1, 1)
        second = Engine(workers=1, store=url)
        engines.append(second)
        assert second.get(h.task_id).result(timeout=30) == "finished"  # type: ignore[union-attr]
        rec = store.get(h.task_id)
        assert rec is not None and (rec.attempts, rec.lost) == (2, 1)
    finally:
        store.close()
