"""Durable tasks on SQLite: cytask's store beside Huey's SqliteHuey, in one run.

    python benchmarks/durable.py [--quick]

Prints a markdown table (goals from issue 9) to stdout, progress to stderr.
Every figure is tasks/s unless named otherwise; each cytask and Huey pair runs on
the same machine, same disk, one after the other.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import psutil  # noqa: E402

import cytask  # noqa: E402

# Worker processes read bytecode from __pycache__, as after `pip install` (which compiles
# it): a PYTHONDONTWRITEBYTECODE=1 environment would otherwise compile every module from
# source at each worker start (~30 ms here, for cytask and Huey alike; see warm_bytecode)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV["PYTHONPATH"] = f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"


def warm_bytecode() -> None:
    """Import what the worker processes import once, so __pycache__ holds it."""
    modules = "cytask._worker_cli, cytask._durable, cytask._store_sqlite, durable_tasks"
    with contextlib.suppress(subprocess.CalledProcessError):
        subprocess.run([sys.executable, "-c", f"import {modules}"], env=ENV, check=True)
        peer = "import huey.bin.huey_consumer, durable_huey_tasks"
        subprocess.run([sys.executable, "-c", peer], env=ENV, check=True,
                       stderr=subprocess.DEVNULL)  # fmt: skip


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fresh(folder: Path, name: str) -> str:
    for suffix in ("", "-wal", "-shm"):
        (folder / f"{name}{suffix}").unlink(missing_ok=True)
    return str(folder / name)


def huey_for(path: str) -> Any:
    os.environ["HUEY_DB"] = path
    import importlib

    import durable_huey_tasks

    importlib.reload(durable_huey_tasks)
    return durable_huey_tasks


# -- enqueue ------------------------------------------------------------------------------


def cytask_single(folder: Path, n: int) -> float:
    url = "sqlite:///" + fresh(folder, "single.db")
    from durable_tasks import noop

    eng = cytask.Engine(workers=0, store=url)
    t0 = time.perf_counter()
    for i in range(n):
        eng.submit(noop, i)
    rate = n / (time.perf_counter() - t0)
    eng.shutdown()
    return rate


def huey_single(folder: Path, n: int) -> float:
    mod = huey_for(fresh(folder, "huey-single.db"))
    t0 = time.perf_counter()
    for i in range(n):
        mod.huey_noop(i)
    return n / (time.perf_counter() - t0)


def cytask_batch(folder: Path, n: int) -> float:
    url = "sqlite:///" + fresh(folder, "batch.db")
    from durable_tasks import noop

    eng = cytask.Engine(workers=0, store=url)
    args = [(i,) for i in range(n)]
    t0 = time.perf_counter()
    eng.submit_many(noop, args)
    rate = n / (time.perf_counter() - t0)
    eng.shutdown()
    return rate


def threads(n_threads: int, per_thread: int, submit: Callable[[int], object]) -> float:
    barrier = threading.Barrier(n_threads + 1)

    def run() -> None:
        barrier.wait()
        for i in range(per_thread):
            submit(i)

    ts = [threading.Thread(target=run) for _ in range(n_threads)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return n_threads * per_thread / (time.perf_counter() - t0)


def cytask_threads(folder: Path, n: int) -> float:
    url = "sqlite:///" + fresh(folder, "threads.db")
    from durable_tasks import noop

    eng = cytask.Engine(workers=0, store=url)
    rate = threads(8, n // 8, lambda i: eng.submit(noop, i))
    eng.shutdown()
    return rate


def huey_threads(folder: Path, n: int) -> float:
    mod = huey_for(fresh(folder, "huey-threads.db"))
    return threads(8, n // 8, mod.huey_noop)


# -- processing by a worker process ---------------------------------------------------------


def cytask_process(folder: Path, n: int) -> float:
    path = fresh(folder, "process.db")
    url = "sqlite:///" + path
    from durable_tasks import noop

    eng = cytask.Engine(workers=0, store=url)
    eng.submit_many(noop, [(i,) for i in range(n)])
    eng.shutdown()
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "cytask", "worker", "durable_tasks", "--store", url,
         "--workers", "8", "--burst", "--quiet"],
        env=ENV, check=True, timeout=600,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    check = cytask.Engine(workers=0, store=url)
    counts = check._durable.store.counts()  # type: ignore[union-attr]
    check.shutdown()
    assert counts["succeeded"] == n, counts
    return n / elapsed


def huey_process(folder: Path, n: int) -> float:
    path = fresh(folder, "huey-process.db")
    mod = huey_for(path)
    for i in range(n):
        mod.huey_noop(i)
    env = dict(ENV, HUEY_DB=path)
    t0 = time.perf_counter()
    consumer = subprocess.Popen(
        [sys.executable, "-m", "huey.bin.huey_consumer", "durable_huey_tasks.huey", "-w", "8",
         "-k", "thread", "-q"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while mod.huey.storage.result_store_size() < n:
            if time.perf_counter() - t0 > 600:
                raise TimeoutError("huey did not finish in 600 s")
            time.sleep(0.005)
        elapsed = time.perf_counter() - t0
    finally:
        consumer.terminate()
        consumer.wait(30)
    return n / elapsed


# -- cross-process wake --------------------------------------------------------------------


def cytask_wake(folder: Path, samples: int) -> tuple[float, float, float]:
    """p50 and p90 ms from commit to start in an idle worker process; its idle CPU %."""
    url = "sqlite:///" + fresh(folder, "wake.db")
    from durable_tasks import stamp

    producer = cytask.Engine(workers=0, store=url)
    worker = subprocess.Popen(
        [sys.executable, "-m", "cytask", "worker", "durable_tasks", "--store", url,
         "--workers", "2", "--quiet"],
        env=ENV,
    )  # fmt: skip
    try:
        producer.submit(stamp, time.time()).result(timeout=30)  # it is up
        time.sleep(0.5)
        proc = psutil.Process(worker.pid)
        c0, t0 = proc.cpu_times(), time.perf_counter()
        time.sleep(3.0)
        c1, t1 = proc.cpu_times(), time.perf_counter()
        idle_cpu = 100 * ((c1.user + c1.system) - (c0.user + c0.system)) / (t1 - t0)
        waits = []
        for _ in range(samples):
            time.sleep(0.02)  # idle again
            waits.append(producer.submit(stamp, time.time()).result(timeout=30) * 1000)
        waits.sort()
        return statistics.median(waits), waits[int(len(waits) * 0.9)], idle_cpu
    finally:
        worker.terminate()
        worker.wait(30)
        producer.shutdown()


def million(folder: Path, n: int) -> list[tuple[int, float, float, int]]:
    """n tasks through one worker process, paced: (done, worker RSS MB, file MB, rows)."""
    path = fresh(folder, "million.db")
    url = "sqlite:///" + path
    from durable_tasks import noop

    eng = cytask.Engine(workers=0, store=url)
    store = eng._durable.store  # type: ignore[union-attr]
    worker = subprocess.Popen(
        [sys.executable, "-m", "cytask", "worker", "durable_tasks", "--store", url,
         "--workers", "8", "--lease", "3", "--result-ttl", "2", "--quiet"],
        env=ENV,
    )  # fmt: skip
    proc = psutil.Process(worker.pid)
    samples = []
    try:
        chunk = 20_000
        for k in range(0, n, chunk):
            eng.submit_many(noop, [(i,) for i in range(k, k + chunk)])
            while store.counts()["pending"] > chunk:  # paced to the worker
                time.sleep(0.02)
            if (k // chunk) % max(1, n // chunk // 10) == 0:
                size = sum(
                    os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s)
                )
                rows = sum(store.counts().values())
                samples.append((k + chunk, proc.memory_info().rss / 2**20, size / 2**20, rows))
                log(f"  {samples[-1]}")
    finally:
        worker.terminate()
        worker.wait(60)
        eng.shutdown()
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller counts (~1 min)")
    ap.add_argument("--no-huey", action="store_true")
    ap.add_argument(
        "--million", action="store_true", help="also 1M tasks: worker memory and file size"
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds per figure (median)")
    args = ap.parse_args()
    warm_bytecode()
    have_huey = not args.no_huey and huey_for("/tmp/huey-probe.db").huey is not None
    q = args.quick
    load0 = os.getloadavg()[0]
    rows: list[tuple[str, str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        def pair(
            what: str, goal: str, ours: Callable[[], float], theirs: Callable[[], float] | None
        ) -> None:
            log(f"{what} ...")
            mine: list[float] = []
            peer: list[float] = []
            for _ in range(args.rounds):  # interleaved: load changes hit both alike
                mine.append(ours())
                if theirs is not None and have_huey:
                    peer.append(theirs())
            a = statistics.median(mine)
            b = statistics.median(peer) if peer else None
            ratio = f"{a / b:.1f}x" if b else "-"
            rows.append((what, f"{a:,.0f}", f"{b:,.0f}" if b else "-", ratio, goal))

        n1 = 5_000 if q else 20_000
        pair("single `delay()` per commit", ">= 25k/s", lambda: cytask_single(folder, n1),
             lambda: huey_single(folder, n1 // 2))  # fmt: skip
        pair("`submit_many` (one commit)", ">= 100k/s",
             lambda: cytask_batch(folder, 20_000 if q else 100_000), None)  # fmt: skip
        pair("8 producer threads", ">= 50k/s", lambda: cytask_threads(folder, n1),
             lambda: huey_threads(folder, n1 // 2))  # fmt: skip
        pair("5,000 no-ops by one worker process (start included)", ">= 30k/s",
             lambda: cytask_process(folder, 5_000),
             lambda: huey_process(folder, 5_000))  # fmt: skip
        if not q:
            pair("100,000 no-ops by one worker process", ">= 30k/s",
                 lambda: cytask_process(folder, 100_000), None)  # fmt: skip
        log("wake ...")
        p50, p90, idle = cytask_wake(folder, 30 if q else 100)
        big = million(folder, 1_000_000) if args.million else []
    print(f"\nload average {load0:.2f} -> {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs\n")
    print("| durable, SQLite | cytask | Huey (SqliteHuey) | ratio | goal |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {' | '.join(r)} |")
    print(f"| cross-process wake, idle worker: p50 / p90 | {p50:.2f} / {p90:.2f} ms | - | - "
          f"| p50 <= 2 ms |")  # fmt: skip
    print(f"| idle worker CPU (3 s) | {idle:.2f} % | - | - | ~0 % |")
    if big:
        print("\n| tasks done (1M, result_ttl 2 s) | worker RSS MB | file + WAL MB | rows |")
        print("|---:|---:|---:|---:|")
        for done, rss, size, rows in big:
            print(f"| {done:,} | {rss:.0f} | {size:.1f} | {rows:,} |")


if __name__ == "__main__":
    main()
