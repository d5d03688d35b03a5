"""Does a busy cytask pool starve the application's own threads?  Side by side with
ThreadPoolExecutor, in one process.

    python benchmarks/gil_fairness.py [--quick] [--rounds N]

A producer thread keeps the pool busy with small CPU-bound Python tasks (a busy loop
of 10 us to 10 ms) while the main thread, standing in for an application's request
thread or event loop, sleeps 10 ms twenty times (``time.sleep(0.01)``, or
``asyncio.sleep(0.01)`` inside ``asyncio.run``) and times each sleep.  A sleep that
takes much longer than 10 ms is time the main thread spent waiting for the GIL.

For every task size and pool size (1, 2 and 8 workers) the pools run interleaved,
``--rounds`` times: cytask with polite workers (``gil_share=0.2``, as for a web
app), cytask as configured by default (``gil_share=1.0``: plain interpreter
switching) and ThreadPoolExecutor.  The table shows the median sleep
(and the worst one) over all rounds and the ratios to ThreadPoolExecutor.  Goal
(issue 12): ratio <= 1.5 everywhere.  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _report import md_table  # benchmarks/ is on sys.path when run as a script

import cytask

SLEEP_S = 0.01
GOAL = 1.5


def busy(us: float) -> None:
    """A CPU-bound Python task: spin in bytecode for `us` microseconds."""
    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass


class Pool:
    """One pool under test: a cytask Engine or a ThreadPoolExecutor."""

    def __init__(self, kind: str, workers: int) -> None:
        self.kind = kind
        if kind.startswith("cytask"):
            share = 1.0 if kind == "cytask-share-1" else 0.2
            self._engine = cytask.Engine(workers=workers, gil_share=share)
            self.submit: Callable[..., Any] = self._engine.submit
        else:
            self._executor = ThreadPoolExecutor(workers)
            self.submit = self._executor.submit

    def close(self) -> None:
        if self.kind.startswith("cytask"):
            self._engine.shutdown(wait=True, cancel_pending=True)
        else:
            self._executor.shutdown(wait=True, cancel_futures=True)


def keep_busy(pool: Pool, task_us: float, workers: int, stop: threading.Event) -> None:
    """Keep about two chunks of ~20 ms of work per worker queued until `stop`."""
    chunk = max(1, int(20_000 * workers / task_us))
    in_flight: list[Any] = []
    while not stop.is_set():
        in_flight.append([pool.submit(busy, task_us) for _ in range(chunk)][-1])
        if len(in_flight) > 2:
            in_flight.pop(0).result()


def time_sleeps(n: int, use_asyncio: bool) -> list[float]:
    samples: list[float] = []
    if use_asyncio:

        async def main() -> None:
            for _ in range(n):
                t0 = time.perf_counter()
                await asyncio.sleep(SLEEP_S)
                samples.append((time.perf_counter() - t0) * 1e3)

        asyncio.run(main())
    else:
        for _ in range(n):
            t0 = time.perf_counter()
            time.sleep(SLEEP_S)
            samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def run_once(kind: str, task_us: float, workers: int, use_asyncio: bool, n: int) -> list[float]:
    pool = Pool(kind, workers)
    stop = threading.Event()
    producer = threading.Thread(target=keep_busy, args=(pool, task_us, workers, stop))
    producer.start()
    # wait until the workers are busy: the first chunk has started running
    pool.submit(busy, 0).result()
    try:
        return time_sleeps(n, use_asyncio)
    finally:
        stop.set()
        producer.join()
        pool.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer cases, one round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sizes_us = [10.0, 50.0, 200.0, 2000.0, 10000.0]
    pools = [1, 2, 8]
    rounds = args.rounds
    samples_per_run = 20
    if args.quick:
        sizes_us, pools, rounds, samples_per_run = [50.0, 2000.0], [1, 2], 1, 10

    print(
        f"# GIL fairness: cytask vs ThreadPoolExecutor ({os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}, switch interval "
        f"{sys.getswitchinterval() * 1e3:.0f} ms, load {os.getloadavg()[0]:.1f})\n"
    )
    rows = []
    worst = 0.0
    for use_asyncio in (False, True):
        for workers in pools:
            for task_us in sizes_us:
                got: dict[str, list[float]] = {"cytask": [], "cytask-share-1": [], "executor": []}
                for _ in range(rounds):
                    for kind in got:
                        got[kind] += run_once(kind, task_us, workers, use_asyncio, samples_per_run)
                med = {k: statistics.median(v) for k, v in got.items()}
                ratio = med["cytask"] / med["executor"]
                ratio_1 = med["cytask-share-1"] / med["executor"]
                worst = max(worst, ratio, ratio_1)
                rows.append(
                    [
                        "asyncio.sleep" if use_asyncio else "time.sleep",
                        f"{task_us:g} us",
                        str(workers),
                        *(f"{med[k]:.1f} (max {max(v):.0f})" for k, v in got.items()),
                        f"{ratio:.2f}x",
                        f"{ratio_1:.2f}x",
                    ]
                )
                print("  ".join(rows[-1]), file=sys.stderr, flush=True)
    print(
        md_table(
            [
                "main thread",
                "task",
                "workers",
                "cytask gil_share=0.2 ms",
                "cytask default (gil_share=1) ms",
                "ThreadPoolExecutor ms",
                "ratio (0.2)",
                "ratio (default)",
            ],
            rows,
            right=3,
        )
    )
    verdict = "PASS" if worst <= GOAL else "FAIL"
    print(f"\nworst ratio {worst:.2f}x (goal <= {GOAL}x): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
