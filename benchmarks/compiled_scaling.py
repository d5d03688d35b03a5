"""Compiled tasks from 1 to every core, beside hand-written ``numba.njit(nogil=True)``.

    python benchmarks/compiled_scaling.py [--per-worker 4]

The kernel of ``compiled.py`` (LCG Monte Carlo, n = 2,000,000 per task), 4 tasks per
worker (more make a late-starting thread count less), medians of 5: cytask's native
workers against a ``ThreadPoolExecutor`` of the same size running the hand-written
function, in the same run.  Also one call on one
thread, compiled (through its dispatcher and through a worker) against hand-written.
Prints one line per measurement; numbers in benchmarks/README-compiled.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba

import cytask
from cytask.compiler import compile_task

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compiled import native
from kernels import pi_lcg

N = 2_000_000


def med(fn: Callable[[], Any], k: int) -> float:
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-worker", type=int, default=4, help="tasks per worker (default 4)")
    per_worker = p.parse_args().per_worker
    hand = numba.njit(nogil=True)(pi_lcg)
    hand(10, 1)
    ct = compile_task(pi_lcg)
    entry = ct.native
    assert entry is not None and ct._callable is not None, ct.fallback_reason
    caller = ct._callable
    print(f"cpus {os.cpu_count()}, Python {sys.version.split()[0]}, Numba {numba.__version__}")
    with cytask.Engine(workers=1) as eng:
        native(eng, entry, (N, 1)).result()
        via_worker = med(lambda: native(eng, entry, (N, 3)).result(), 9)
        via_caller = med(lambda: caller(N, 3), 9)
        by_hand = med(lambda: hand(N, 3), 9)
    print(
        f"one call: compiled {via_caller * 1e3:.2f} ms (through a worker "
        f"{via_worker * 1e3:.2f} ms), njit {by_hand * 1e3:.2f} ms: "
        f"{by_hand / via_caller:.3f}x"
    )
    base: dict[str, float] = {}
    cores = os.cpu_count() or 1
    for w in [w for w in (1, 2, 4, 8, 16, 32, 64) if w <= cores]:
        tasks = per_worker * w
        with cytask.Engine(workers=w) as eng, ThreadPoolExecutor(w) as pool:

            def run_compiled(eng: cytask.Engine = eng, tasks: int = tasks) -> None:
                for h in [native(eng, entry, (N, s)) for s in range(tasks)]:
                    h.result()

            def run_hand(pool: ThreadPoolExecutor = pool, tasks: int = tasks) -> None:
                list(pool.map(lambda s: hand(N, s), range(tasks)))

            run_compiled()
            run_hand()
            t_c, t_h = med(run_compiled, 5), med(run_hand, 5)
        c, h = 2 * N * tasks / t_c, 2 * N * tasks / t_h
        if w == 1:
            base = {"c": c, "h": h}
        print(
            f"workers {w:2d}: compiled {c / 1e6:,.0f} M/s ({c / (w * base['c']):.2f} of "
            f"linear), njit {h / 1e6:,.0f} M/s ({h / (w * base['h']):.2f} of linear), "
            f"compiled / njit {c / h:.3f}"
        )


if __name__ == "__main__":
    main()
