"""Compiled tasks: speed per call, scaling across workers, dispatch cost, compile time.

    python benchmarks/compiled.py            # prints a Markdown table
    python benchmarks/compiled.py --quick    # smaller sizes, for a smoke run

The workload is a Monte Carlo estimate of pi driven by a linear congruential
generator: each step depends on the last, so LLVM cannot fold the loop into a
formula (a sum-of-squares loop would become a closed form and measure nothing).
Every number is the median of several runs; ratios are what to look at.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from kernels import pi_lcg

import cytask
from cytask.compiler import NativeEntry, compile_task


def tiny(a: int, b: int) -> int:
    return a + b


def median_time(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def native(eng: cytask.Engine, entry: NativeEntry, args: tuple[Any, ...]) -> Any:
    return eng.submit_native(entry.address, args, entry.arg_kinds, entry.result_kind)


def per_call(n: int, repeat: int) -> tuple[float, float]:
    ct = compile_task(pi_lcg)
    assert ct.native is not None, ct.fallback_reason
    entry = ct.native
    with cytask.Engine(workers=1) as eng:
        assert native(eng, entry, (1000, 1)).result() == pi_lcg(1000, 1)
        t_py = median_time(lambda: pi_lcg(n, 1), max(1, repeat // 2))
        t_c = median_time(lambda: native(eng, entry, (n, 1)).result(), repeat)
    return t_py, t_c


def scaling(tasks: int, n: int, n_py: int, repeat: int) -> dict[str, float]:
    entry = compile_task(pi_lcg).native
    assert entry is not None
    out: dict[str, float] = {}
    for workers in (1, 2):
        with cytask.Engine(workers=workers) as eng:

            def run_native(eng: cytask.Engine = eng) -> None:
                hs = [native(eng, entry, (n, s)) for s in range(tasks)]
                for h in hs:
                    h.result()

            def run_python(eng: cytask.Engine = eng) -> None:
                hs = [eng.add_task(pi_lcg, n_py, s) for s in range(tasks)]
                for h in hs:
                    h.result()

            run_native()
            out[f"native{workers}"] = median_time(run_native, repeat)
            out[f"python{workers}"] = median_time(run_python, max(1, repeat // 2))
    return out


def versus_njit(tasks: int, n: int, repeat: int) -> tuple[int, float, float]:
    """Samples per second on every core: cytask compiled against hand-written Numba.

    The same kernel under ``numba.njit(nogil=True)`` (no exactness checks) on a thread
    pool of the same size, measured in the same run, interleaved.
    """
    from concurrent.futures import ThreadPoolExecutor

    import numba

    workers = os.cpu_count() or 1
    hand = numba.njit(nogil=True)(pi_lcg)
    hand(10, 1)
    entry = compile_task(pi_lcg).native
    assert entry is not None
    samples = 2 * n * tasks
    t_c: list[float] = []
    t_h: list[float] = []
    with cytask.Engine(workers=workers) as eng, ThreadPoolExecutor(workers) as pool:

        def run_native() -> None:
            hs = [native(eng, entry, (n, s)) for s in range(tasks)]
            for h in hs:
                h.result()

        def run_hand() -> None:
            list(pool.map(lambda s: hand(n, s), range(tasks)))

        run_native()
        run_hand()
        for _ in range(repeat):
            t_c.append(median_time(run_native, 1))
            t_h.append(median_time(run_hand, 1))
    return workers, samples / statistics.median(t_c), samples / statistics.median(t_h)


def dispatch(count: int, repeat: int) -> tuple[float, float]:
    entry = compile_task(tiny).native
    assert entry is not None
    with cytask.Engine(workers=1) as eng:

        def run_native() -> None:
            hs = [native(eng, entry, (i, 1)) for i in range(count)]
            for h in hs:
                h.result()

        def run_python() -> None:
            hs = [eng.add_task(tiny, i, 1) for i in range(count)]
            for h in hs:
                h.result()

        run_native()
        t_n = median_time(run_native, repeat) / count
        t_p = median_time(run_python, repeat) / count
    return t_n, t_p


def dispatch_task(count: int, repeat: int) -> tuple[float, float]:
    """The same tiny function through ``@task``: compiled (plan + native) vs Python."""
    compiled_t = cytask.task(compile_to_c=True)(tiny)
    python_t = cytask.task(tiny)
    with cytask.Engine(workers=1) as eng:
        eng.warmup()

        def run(t: Any) -> None:
            hs = [eng.add_task(t, i, 1) for i in range(count)]
            for h in hs:
                h.result()

        run(compiled_t)
        run(python_t)
        t_c: list[float] = []
        t_p: list[float] = []
        for _ in range(repeat):  # interleaved: both see the same machine
            t_c.append(median_time(lambda: run(compiled_t), 1))
            t_p.append(median_time(lambda: run(python_t), 1))
    return statistics.median(t_c) / count, statistics.median(t_p) / count


_PROBE = """
import sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
import compiled
from cytask.compiler import compile_task
ct = compile_task(compiled.pi_lcg)
print(ct.backend, ct.compile_ms, (time.perf_counter() - t0) * 1000)
"""


def compile_times() -> tuple[float, float]:
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "CYTASK_CACHE_DIR": cache}
        ms = []
        for _ in range(2):
            out = subprocess.run(
                [sys.executable, "-c", _PROBE, here],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            ).stdout.split()
            assert out[0] == "numba", out
            ms.append(float(out[1]))
    return ms[0], ms[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    opt = p.parse_args(argv)
    scale = 10 if opt.quick else 1
    repeat = 3 if opt.quick else 5
    n = 2_000_000 // scale

    t_py, t_c = per_call(n, repeat)
    s = scaling(tasks=8, n=4_000_000 // scale, n_py=200_000 // scale, repeat=repeat)
    cores, m_c, m_h = versus_njit(tasks=16, n=2_000_000 // scale, repeat=repeat)
    d_n, d_p = dispatch(20_000 // scale, repeat)
    dt_c, dt_p = dispatch_task(20_000 // scale, 3 * repeat)
    cold, warm = compile_times()

    rows = [
        ("per call: Python", f"{t_py * 1e3:.1f} ms", ""),
        ("per call: compiled (native, via submit_native)", f"{t_c * 1e3:.2f} ms",
         f"**{t_py / t_c:.0f}x** faster (goal >= 50x)"),
        ("8 native tasks, 1 worker", f"{s['native1'] * 1e3:.1f} ms", ""),
        ("8 native tasks, 2 workers", f"{s['native2'] * 1e3:.1f} ms",
         f"**{s['native1'] / s['native2']:.2f}x** (goal >= 1.7x)"),
        ("8 Python tasks, 1 worker", f"{s['python1'] * 1e3:.1f} ms", ""),
        ("8 Python tasks, 2 workers", f"{s['python2'] * 1e3:.1f} ms",
         f"{s['python1'] / s['python2']:.2f}x (the GIL: ~1.0x expected)"),
        (f"throughput, {cores} workers: compiled", f"{m_c / 1e6:,.0f} M samples/s",
         f"**{m_c / m_h:.2f}x** hand-written njit(nogil) (goal >= 0.95x)"),
        (f"throughput, {cores} threads: njit(nogil=True), no checks",
         f"{m_h / 1e6:,.0f} M samples/s", ""),
        ("dispatch, tiny native task", f"{d_n * 1e6:.2f} us/task", ""),
        ("dispatch, tiny Python task", f"{d_p * 1e6:.2f} us/task",
         f"native {d_p / d_n:.1f}x cheaper"),
        ("dispatch, tiny task via @task(compile_to_c=True)", f"{dt_c * 1e6:.2f} us/task", ""),
        ("dispatch, tiny task via @task (Python)", f"{dt_p * 1e6:.2f} us/task",
         f"compiled/Python **{dt_c / dt_p:.2f}** (goal <= 1.00)"),
        ("compile, cold cache (incl. importing Numba)", f"{cold:.0f} ms", ""),
        ("compile, from the cache (incl. importing Numba)", f"{warm:.0f} ms",
         f"{cold / warm:.1f}x faster"),
    ]  # fmt: skip
    print(f"Monte Carlo pi, LCG, n={n:,} per call; {os.cpu_count()} cores; "
          f"Python {sys.version.split()[0]}\n")  # fmt: skip
    print("| measurement | time | ratio |")
    print("|---|---|---|")
    for name, value, ratio in rows:
        print(f"| {name} | {value} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
