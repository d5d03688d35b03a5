"""What the exactness checks cost, and what the compiler's proofs take off, per kernel.

    python benchmarks/compiled_checks.py [--quick]

Each kernel is compiled three ways in one process and timed alternately, one call on
one thread (the dispatcher), median of several runs:

* **checked**: every int ``+ - *`` checked, the flag tested at every loop iteration
  (the compiler with its proofs switched off: the blocks of ``_block``, the counters of
  ``_counters`` and the ranges of ``_intervals``);
* **cytask**: the compiler as it ships;
* **njit**: ``numba.njit(nogil=True)`` of the same function, no checks (not exact).

Ratios are what to look at; this 2-core VM is noisy.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import numba
from kernels import pi_lcg

import cytask.compiler._analysis as analysis
from cytask.compiler import compile_task


def lcg_nested(n: int, k: int) -> int:
    """An LCG stepped k times per outer step; its state starts at a constant."""
    x = 1
    acc = 0
    for _ in range(n):
        for j in range(k):
            x = (x * 1103515245 + 12345 + j) & 0x7FFFFFFF
        acc = (acc + x) & 0xFFFFFFF
    return acc


def fnv_mix(n: int, seed: int) -> int:
    """FNV-1a over the low bytes of 0..n-1: a 32-bit state times a 25-bit prime."""
    h = seed & 0xFFFFFFFF
    for i in range(n):
        h = (h ^ (i & 0xFF)) * 16777619 & 0xFFFFFFFF
    return h


def count_small(n: int, seed: int) -> int:
    """How many LCG values fall below 2**20: a counter beside a carried state."""
    x = seed & 0x7FFFFFFF
    hits = 0
    for _ in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        if x < 1048576:
            hits += 1
    return hits


@contextmanager
def proofs_off() -> Any:
    saved = analysis._blockable, analysis.mark_safe_counters, analysis.mark_safe_arithmetic
    analysis._blockable = lambda node: False
    analysis.mark_safe_counters = lambda fn: set()
    analysis.mark_safe_arithmetic = lambda *args: 0
    try:
        yield
    finally:
        analysis._blockable, analysis.mark_safe_counters, analysis.mark_safe_arithmetic = saved


def dispatcher(fn: Callable[..., Any]) -> Callable[..., Any]:
    ct = compile_task(fn)
    assert ct._callable is not None and ct.backend == "numba", ct.fallback_reason
    return ct._callable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    opts = parser.parse_args()
    scale = 10 if opts.quick else 1
    cases: list[tuple[str, Callable[..., Any], tuple[int, int]]] = [
        ("pi_lcg (benchmarks/kernels.py)", pi_lcg, (2_000_000 // scale, 7)),
        ("lcg_nested, inner loop of 2", lcg_nested, (2_000_000 // scale, 2)),
        ("lcg_nested, inner loop of 40", lcg_nested, (200_000 // scale, 40)),
        ("fnv_mix", fnv_mix, (4_000_000 // scale, 7)),
        ("count_small", count_small, (4_000_000 // scale, 7)),
    ]
    print(f"Numba {numba.__version__}; one call, one thread, median of 7 alternated runs (ms)\n")
    print("| kernel | checked | cytask | njit | cytask vs checked | cytask vs njit |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, fn, args in cases:
        with proofs_off():
            checked = dispatcher(fn)
        ours = dispatcher(fn)
        hand = numba.njit(nogil=True)(fn)
        want = fn(*(min(a, 1000) for a in args))
        for f in (checked, ours, hand):
            assert f(*(min(a, 1000) for a in args)) == want
        times: dict[str, list[float]] = {"checked": [], "cytask": [], "njit": []}
        for _ in range(7):
            for name, f in (("checked", checked), ("cytask", ours), ("njit", hand)):
                t0 = time.perf_counter()
                f(*args)
                times[name].append(time.perf_counter() - t0)
        c, o, h = (statistics.median(times[k]) * 1e3 for k in ("checked", "cytask", "njit"))
        print(f"| {label} | {c:.2f} | {o:.2f} | {h:.2f} | {c / o:.2f}x faster | {h / o:.2f}x |")


if __name__ == "__main__":
    main()
