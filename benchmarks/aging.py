"""LOW-priority latency under a CRITICAL flood: strict priority beside aging.

    python benchmarks/aging.py [--quick] [--seconds S] [--workers N]

One producer thread keeps the CRITICAL level full (it blocks on the full ring, so
the backlog never drains) with short tasks; the main thread submits one LOW task
every 2 ms.  Each LOW task records when it started; its latency is start minus
submit.  The flood stops after S seconds and the engine drains.  Reported per
policy (``Engine(starvation_limit=None)``, strict, the default, and a few limits):

* LOW tasks: how many were submitted, and how many of them waited over 100 ms;
* LOW wait p50 / p99 / max: submit to start, over all LOW tasks;
* CRITICAL/s during the flood: what the aging costs the flood.

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Sequence

from _report import md_table, rate  # benchmarks/ is on sys.path when run as a script

import cytask
from cytask import Priority

LOW_EVERY_S = 0.002
QUEUE_SIZE = 4096


def critical_work() -> int:
    return sum(range(1000))  # ~10-20 us: the workers, not the producer, set the pace


def run(limit: int | None, seconds: float, workers: int) -> dict[str, float]:
    eng = cytask.Engine(workers=workers, queue_size=QUEUE_SIZE, starvation_limit=limit)
    stop = threading.Event()
    flooded = [0]

    def producer() -> None:
        n = 0
        while not stop.is_set():
            eng.add_task(critical_work, priority=Priority.CRITICAL)
            n += 1
        flooded[0] = n

    submitted: list[float] = []
    started: list[float] = []
    prod = threading.Thread(target=producer)
    prod.start()
    while eng.stats().critical_queue_size < QUEUE_SIZE // 2:  # the flood is on
        time.sleep(0.001)
    processed0 = eng.stats().total_tasks_processed
    t0 = time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        submitted.append(time.perf_counter())
        eng.add_task(lambda: started.append(time.perf_counter()), priority=Priority.LOW)
        time.sleep(LOW_EVERY_S)
    flood_end = time.perf_counter()
    processed = eng.stats().total_tasks_processed - processed0
    low_done = sum(1 for s in started if s < flood_end)
    stop.set()
    prod.join()
    eng.shutdown(wait=True)
    waits = sorted(s - q for s, q in zip(sorted(started), submitted, strict=True))
    return {
        "low": len(submitted),
        "slow": sum(1 for w in waits if w > 0.1),
        "p50_ms": statistics.median(waits) * 1e3,
        "p99_ms": waits[min(len(waits) - 1, int(0.99 * len(waits)))] * 1e3,
        "max_ms": waits[-1] * 1e3,
        "critical_per_s": (processed - low_done) / (flood_end - t0),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="0.5 s floods")
    parser.add_argument("--seconds", type=float, default=2.0, help="flood length per policy")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    seconds = 0.5 if args.quick else args.seconds
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f}, workers={args.workers}, flood {seconds} s, "
        f"one LOW task every {LOW_EVERY_S * 1e3:.0f} ms\n"
    )
    rows = []
    for limit in (None, 1000, 100, 10):
        print(f"starvation_limit={limit} ...", file=sys.stderr)
        r = run(limit, seconds, args.workers)
        rows.append(
            [
                "strict (default)" if limit is None else f"starvation_limit={limit}",
                f"{r['low']:.0f} ({r['slow']:.0f} over 100 ms)",
                f"{r['p50_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                f"{r['max_ms']:.1f}",
                rate(r["critical_per_s"]),
            ]
        )
    headers = [
        "policy",
        "LOW tasks",
        "LOW wait p50 ms",
        "p99 ms",
        "max ms",
        "CRITICAL/s during the flood",
    ]
    print(md_table(headers, rows))
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
