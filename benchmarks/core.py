"""Core figures of cytask beside ThreadPoolExecutor and Catzilla, in one process.

    python benchmarks/core.py [--quick] [--rounds N] [--no-catzilla]
    python benchmarks/core.py --wake [--quick]   # wake latency at 1, 2, 4, 8, 16 workers
    python benchmarks/core.py --import           # `import cytask` time; exit 1 above 20 ms

Three measurements, each for ``cytask.Engine(workers=1|2)``,
``ThreadPoolExecutor(1|2)`` and, when it is importable, Catzilla's ``add_task``:

* submit rate: how fast one thread can call ``submit(noop)`` while the workers run;
* end-to-end rate: submit N no-op tasks, then ``shutdown(wait=True)``;
  ``N / (time from the first submit to the end of shutdown)``;
* idle wake latency: submit one task to an idle pool, the task records
  ``time.perf_counter_ns()``; latency is that minus the time just before submit.
  Each sample waits for its result, then the pool idles 1-2 ms (seeded random, so a
  pool that polls on a timer, like Catzilla's 1 ms sleep, is not sampled in phase).

``--wake`` measures only the idle wake latency, for pool sizes 1, 2, 4, 8 and 16,
cytask beside ThreadPoolExecutor: the two pools live side by side and take turns
sample by sample, so a noisy moment hits both.  ``--import`` times ``import cytask``
in fresh interpreters (the best of several) and fails above ``IMPORT_BUDGET_MS``.

Throughput rounds are interleaved (every system once per round) and the medians are
reported, so a slow minute on this noisy 2-core machine hits every system alike.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.util
import io
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from typing import Any

from _report import md_table, rate  # benchmarks/ is on sys.path when run as a script

import cytask

# queue_size holds the whole 1M burst, so submit/s measures the submit call, not the
# back-pressure of a full queue (with the default 65,536 slots submit waits for space).
CYTASK_KWARGS: dict[str, Any] = {"queue_size": 1 << 20}
CATZILLA_QUEUE_SIZE = 4_000_000  # Catzilla's NORMAL level holds queue_size // 2

# idle time before each wake sample, uniform in this range: longer than any worker's
# spin (cytask parks after tens of us), and random so it does not beat with a poll timer
WAKE_GAP_S = (0.001, 0.002)
WAKE_SEED = 20240601
WAKE_POOL_SIZES = (1, 2, 4, 8, 16)
# goals at every pool size (issue 7): p50 <= 0.6x and p99 <= 1.0x ThreadPoolExecutor's
WAKE_P50_GOAL = 0.6
WAKE_P99_GOAL = 1.0
IMPORT_BUDGET_MS = 20.0
IMPORT_RUNS = 9


@dataclasses.dataclass(frozen=True)
class Sizes:
    cytask: int
    executor: int
    catzilla: int
    rounds: int
    wake_samples: int
    wake_warmup: int


# The executors run 50-140k tasks/s here (1M would take 7-20 s per round), Catzilla
# ~25-50k/s; they run fewer tasks per round and report tasks/s like the rest.
FULL = Sizes(
    cytask=1_000_000,
    executor=250_000,
    catzilla=100_000,
    rounds=5,
    wake_samples=2000,
    wake_warmup=200,
)
QUICK = Sizes(
    cytask=200_000,
    executor=100_000,
    catzilla=20_000,
    rounds=1,
    wake_samples=500,
    wake_warmup=50,
)


def noop() -> None:
    pass


def stamp() -> int:
    return time.perf_counter_ns()


# ---------------------------------------------------------------------------
# The systems under test, behind one small adapter


@dataclasses.dataclass
class Pool:
    """One live pool: how to submit to it, wait for one task, and drain it."""

    submit: Callable[[Callable[[], Any]], Any]
    result: Callable[[Any], Any]
    drain: Callable[[list[Any]], int]  # waits for every task, returns how many ran
    keep_handles: bool = False  # True when draining needs the handles (Catzilla)


@dataclasses.dataclass
class System:
    name: str
    workers: str
    make: Callable[[], Pool]
    n: int
    key: str = ""
    e2e: list[float] = dataclasses.field(default_factory=list)
    submit: list[float] = dataclasses.field(default_factory=list)
    wake_p50_us: float = float("nan")
    wake_p99_us: float = float("nan")


def cytask_pool(workers: int, **options: Any) -> Pool:
    eng = cytask.Engine(workers=workers, **CYTASK_KWARGS, **options)

    def drain(_: list[Any]) -> int:
        eng.shutdown(wait=True)
        return int(eng.stats().total_tasks_processed)

    return Pool(eng.submit, lambda h: h.result(), drain)


def executor_pool(workers: int) -> Pool:
    ex = ThreadPoolExecutor(workers)

    def drain(_: list[Any]) -> int:
        ex.shutdown(wait=True)
        return -1  # the executor does not count; shutdown(wait=True) ran them all

    return Pool(ex.submit, lambda f: f.result(), drain)


def catzilla_available() -> bool:
    return importlib.util.find_spec("catzilla") is not None


def catzilla_pool() -> Pool:
    """Catzilla 0.2.3: ``add_task`` with its default workers (min(32, 2 * cpus)).

    Its ``TaskResult.wait()`` never returns (it polls a flag nothing sets) and its
    shutdown drops queued tasks, so we wait on the Future it keeps in ``_result``.
    """
    with contextlib.redirect_stdout(io.StringIO()):  # its banners
        from catzilla import Catzilla  # type: ignore[import-untyped]

        app = Catzilla(show_banner=False, log_requests=False, production=True)
        app.enable_background_tasks(queue_size=CATZILLA_QUEUE_SIZE)

    def result(r: Any) -> Any:
        return r._result.result()

    def drain(handles: list[Any]) -> int:
        for r in handles:
            r._result.exception()
        # the handler Catzilla registers with atexit: stops the workers, and prints
        with contextlib.redirect_stdout(io.StringIO()):
            app._shutdown_tasks()
        return len(handles)

    return Pool(app.add_task, result, drain, keep_handles=True)


def build_systems(sizes: Sizes, with_catzilla: bool) -> list[System]:
    systems = [
        System("cytask Engine", "1", lambda: cytask_pool(1), sizes.cytask, "cy1"),
        System("cytask Engine", "2", lambda: cytask_pool(2), sizes.cytask, "cy2"),
        # the submitter's contextvars copied to each task (Engine(copy_context=True))
        System(
            "cytask copy_context=True",
            "1",
            lambda: cytask_pool(1, copy_context=True),
            sizes.cytask,
            "cyctx1",
        ),
        System(
            "cytask copy_context=True",
            "2",
            lambda: cytask_pool(2, copy_context=True),
            sizes.cytask,
            "cyctx2",
        ),
        System("ThreadPoolExecutor", "1", lambda: executor_pool(1), sizes.executor, "tpe1"),
        System("ThreadPoolExecutor", "2", lambda: executor_pool(2), sizes.executor, "tpe2"),
    ]
    if with_catzilla:
        workers = str(min(32, 2 * (os.cpu_count() or 1)))
        systems.append(
            System("Catzilla add_task", workers, catzilla_pool, sizes.catzilla, "catzilla")
        )
    return systems


# ---------------------------------------------------------------------------
# Measurements


def end_to_end(system: System) -> None:
    """One round: submit system.n no-ops, then drain; record both rates."""
    n = system.n
    pool = system.make()
    submit = pool.submit
    gc.collect()
    handles: list[Any] = []
    t0 = time.perf_counter()
    if pool.keep_handles:
        append = handles.append
        for _ in repeat(None, n):
            append(submit(noop))
    else:
        for _ in repeat(None, n):
            submit(noop)
    t1 = time.perf_counter()
    ran = pool.drain(handles)
    t2 = time.perf_counter()
    if ran not in (-1, n):
        raise SystemExit(f"{system.name} ({system.workers}) ran {ran} of {n} tasks")
    del handles
    system.submit.append(n / (t1 - t0))
    system.e2e.append(n / (t2 - t0))


def wake_latency(system: System, samples: int, warmup: int) -> None:
    """Submit-to-start latency on an idle pool: p50 and p99 in microseconds."""
    pool = system.make()
    submit, result = pool.submit, pool.result
    gaps = random.Random(WAKE_SEED)
    lat: list[int] = []
    for i in range(warmup + samples):
        time.sleep(gaps.uniform(*WAKE_GAP_S))
        t0 = time.perf_counter_ns()
        started = result(submit(stamp))
        if i >= warmup:
            lat.append(started - t0)
    pool.drain([])
    lat.sort()
    system.wake_p50_us = lat[len(lat) // 2] / 1e3
    system.wake_p99_us = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1e3


def wake_sizes(samples: int, warmup: int) -> list[tuple[int, list[int], list[int]]]:
    """Wake latency (ns) of cytask and ThreadPoolExecutor at each of WAKE_POOL_SIZES.

    Both pools of one size live at once and alternate sample by sample (which goes
    first alternates too), each sample after its own 1-2 ms idle gap."""
    out = []
    gaps = random.Random(WAKE_SEED)
    for n in WAKE_POOL_SIZES:
        pools = (cytask_pool(n), executor_pool(n))
        lat: tuple[list[int], list[int]] = ([], [])
        for i in range(warmup + samples):
            for k in (0, 1) if i % 2 else (1, 0):
                pool = pools[k]
                time.sleep(gaps.uniform(*WAKE_GAP_S))
                t0 = time.perf_counter_ns()
                started = pool.result(pool.submit(stamp))
                if i >= warmup:
                    lat[k].append(started - t0)
        for pool in pools:
            pool.drain([])
        print(
            f"  wake {n:2d} workers: cytask p50 {pct(lat[0], 0.5):.1f} us, ThreadPoolExecutor "
            f"p50 {pct(lat[1], 0.5):.1f} us",
            file=sys.stderr,
            flush=True,
        )
        out.append((n, lat[0], lat[1]))
    return out


def pct(ns: list[int], q: float) -> float:
    """The q-quantile of `ns`, in microseconds."""
    xs = sorted(ns)
    return xs[min(len(xs) - 1, int(len(xs) * q))] / 1e3


def wake_report(results: list[tuple[int, list[int], list[int]]]) -> tuple[str, bool]:
    rows = []
    ok_all = True
    for n, cy, tpe in results:
        r50 = pct(cy, 0.5) / pct(tpe, 0.5)
        r99 = pct(cy, 0.99) / pct(tpe, 0.99)
        ok = r50 <= WAKE_P50_GOAL and r99 <= WAKE_P99_GOAL
        ok_all &= ok
        rows.append(
            [
                str(n),
                f"{pct(cy, 0.5):.1f}",
                f"{pct(tpe, 0.5):.1f}",
                f"{r50:.2f}x",
                f"{pct(cy, 0.99):.1f}",
                f"{pct(tpe, 0.99):.1f}",
                f"{r99:.2f}x",
                verdict(ok),
            ]
        )
    table = md_table(
        [
            "workers",
            "cytask p50 us",
            "TPE p50 us",
            f"p50 ratio (<= {WAKE_P50_GOAL})",
            "cytask p99 us",
            "TPE p99 us",
            f"p99 ratio (<= {WAKE_P99_GOAL})",
            "goal",
        ],
        rows,
    )
    return table, ok_all


def import_ms(runs: int) -> list[float]:
    """Wall time of `import cytask` in fresh interpreters, milliseconds, sorted.

    One warm-up run first writes the bytecode cache (unless PYTHONDONTWRITEBYTECODE
    is set: then every run compiles cytask's modules, ~8 ms more here)."""
    code = (
        "import time; t = time.perf_counter(); import cytask; "
        "print((time.perf_counter() - t) * 1e3)"
    )

    def once() -> float:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        return float(out.stdout)

    once()
    return sorted(once() for _ in range(runs))


# ---------------------------------------------------------------------------
# Report


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def spread(xs: list[float]) -> str:
    return f"{rate(min(xs))}-{rate(max(xs))}" if len(xs) > 1 else "-"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(systems: list[System]) -> str:
    by = {s.key: s for s in systems}
    out: list[str] = []
    rows = [
        [
            s.name,
            s.workers,
            f"{s.n:,}",
            rate(median(s.submit)),
            rate(median(s.e2e)),
            spread(s.e2e),
            f"{s.wake_p50_us:.1f}",
            f"{s.wake_p99_us:.1f}",
        ]
        for s in systems
    ]
    out.append(
        md_table(
            [
                "system",
                "workers",
                "tasks/round",
                "submit/s",
                "end-to-end/s",
                "e2e range",
                "wake p50 us",
                "wake p99 us",
            ],
            rows,
            right=2,
        )
    )

    tpe2 = by["tpe2"]
    ratio_rows = []
    for w in ("1", "2"):
        cy, tpe = by[f"cy{w}"], by[f"tpe{w}"]
        row = [
            f"cytask({w})",
            f"{median(cy.submit) / median(tpe.submit):.1f}x",
            f"{median(cy.e2e) / median(tpe.e2e):.1f}x",
            f"{median(cy.e2e) / median(tpe2.e2e):.1f}x",
            f"{cy.wake_p50_us / tpe.wake_p50_us:.2f}x",
        ]
        cz = by.get("catzilla")
        row += (
            [
                f"{median(cy.e2e) / median(cz.e2e):.0f}x",
                f"{cy.wake_p50_us / cz.wake_p50_us:.3f}x",
            ]
            if cz
            else ["n/a", "n/a"]
        )
        ratio_rows.append(row)
    out.append("")
    out.append(
        md_table(
            [
                "ratio",
                "submit vs TPE(same)",
                "e2e vs TPE(same)",
                "e2e vs TPE(2)",
                "wake p50 vs TPE(same)",
                "e2e vs Catzilla",
                "wake p50 vs Catzilla",
            ],
            ratio_rows,
        )
    )

    goal_rows = []
    cys = [by["cy1"], by["cy2"]]

    def cells(pred: Callable[[System], tuple[bool, str]]) -> list[str]:
        return [f"{txt} {verdict(ok)}" for ok, txt in map(pred, cys)]

    tpe_of = {"1": by["tpe1"], "2": by["tpe2"]}
    goal_rows.append(
        [
            "end-to-end >= 20x ThreadPoolExecutor(2)",
            *cells(
                lambda s: (
                    median(s.e2e) >= 20 * median(tpe2.e2e),
                    f"{median(s.e2e) / median(tpe2.e2e):.1f}x",
                )
            ),
        ]
    )
    goal_rows.append(
        [
            "end-to-end >= 1M tasks/s",
            *cells(lambda s: (median(s.e2e) >= 1e6, rate(median(s.e2e)))),
        ]
    )
    goal_rows.append(
        [
            "submit >= 2M tasks/s",
            *cells(lambda s: (median(s.submit) >= 2e6, rate(median(s.submit)))),
        ]
    )
    goal_rows.append(
        [
            "wake p50 <= 0.6x ThreadPoolExecutor (same workers)",
            *cells(
                lambda s: (
                    s.wake_p50_us <= 0.6 * tpe_of[s.workers].wake_p50_us,
                    f"{s.wake_p50_us / tpe_of[s.workers].wake_p50_us:.2f}x",
                )
            ),
        ]
    )
    out.append("")
    out.append(md_table(["goal", "cytask(1)", "cytask(2)"], goal_rows))
    return "\n".join(out)


def header(sizes: Sizes, with_catzilla: bool) -> str:
    catz = "not installed"
    if with_catzilla:
        from importlib.metadata import version

        catz = version("catzilla")
    return (
        f"cytask {cytask.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, catzilla {catz}\n"
        f"end-to-end tasks per round: cytask {sizes.cytask:,}, executors "
        f"{sizes.executor:,}, Catzilla {sizes.catzilla:,}; medians of {sizes.rounds} "
        f"round(s); wake: {sizes.wake_samples:,} samples after {sizes.wake_warmup} "
        f"warm-up, {WAKE_GAP_S[0] * 1e3:g}-{WAKE_GAP_S[1] * 1e3:g} ms idle before each\n"
        f"cytask.Engine kwargs: {CYTASK_KWARGS}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one round")
    parser.add_argument("--rounds", type=int, help="throughput rounds (median reported)")
    parser.add_argument("--no-catzilla", action="store_true", help="skip Catzilla")
    parser.add_argument(
        "--wake", action="store_true", help="only wake latency, 1-16 workers, beside TPE"
    )
    parser.add_argument(
        "--import",
        dest="import_time",
        action="store_true",
        help=f"only `import cytask` time; exit 1 above {IMPORT_BUDGET_MS:g} ms",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.import_time:
        ms = import_ms(IMPORT_RUNS)
        ok = ms[0] <= IMPORT_BUDGET_MS
        cache = "off (PYTHONDONTWRITEBYTECODE)" if sys.dont_write_bytecode else "on"
        print(
            f"import cytask: best {ms[0]:.1f} ms, median {statistics.median(ms):.1f} ms of "
            f"{IMPORT_RUNS} fresh interpreters, bytecode cache {cache}; budget "
            f"{IMPORT_BUDGET_MS:g} ms: {verdict(ok)}"
        )
        return 0 if ok else 1
    if args.wake:
        print(
            f"cytask {cytask.__version__}, Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; wake latency: "
            f"{sizes.wake_samples:,} samples per system after {sizes.wake_warmup} warm-up, "
            f"{WAKE_GAP_S[0] * 1e3:g}-{WAKE_GAP_S[1] * 1e3:g} ms idle before each",
            flush=True,
        )
        table, _ = wake_report(wake_sizes(sizes.wake_samples, sizes.wake_warmup))
        print()
        print(table)
        print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.2f}")
        return 0
    if args.rounds is not None:
        sizes = dataclasses.replace(sizes, rounds=max(1, args.rounds))
    with_catzilla = catzilla_available() and not args.no_catzilla
    systems = build_systems(sizes, with_catzilla)
    print(header(sizes, with_catzilla), flush=True)

    started = time.perf_counter()
    for r in range(sizes.rounds):
        for s in systems:
            end_to_end(s)
            print(
                f"  round {r + 1}: {s.name} ({s.workers}): submit {rate(s.submit[-1])}/s, "
                f"end-to-end {rate(s.e2e[-1])}/s",
                file=sys.stderr,
                flush=True,
            )
    for s in systems:
        gc.collect()
        wake_latency(s, sizes.wake_samples, sizes.wake_warmup)
        print(
            f"  wake: {s.name} ({s.workers}): p50 {s.wake_p50_us:.1f} us, "
            f"p99 {s.wake_p99_us:.1f} us",
            file=sys.stderr,
            flush=True,
        )
    print(f"  total {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print()
    print(report(systems))
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
