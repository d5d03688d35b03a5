"""The django-vtasks benchmark method, applied to in-process engines.

    python benchmarks/vtasks.py [--quick] [--rounds N] [--tasks N] [--no-catzilla]

Method (../shared/reference/django-vtasks-vs-celery-rq-benchmark.md): 5,000 tasks
per run, NoOp and Sleep 10 ms, 200 concurrency; enqueue/s is tasks / time to
submit them all, process/s is tasks / time from the first submit to the last
completion, peak RSS is the run's ``ru_maxrss``.  Each (scenario, system) runs in a
fresh subprocess, so RSS is its own and no system's threads outlive its run.
Rounds are interleaved; medians are reported.

Sync scenarios (plain ``def``, ``time.sleep``): cytask, ``ThreadPoolExecutor(200)``,
Catzilla ``add_task`` with 200 workers.  Async scenarios (``async def``,
``asyncio.sleep``): cytask ``Engine.submit`` of the coroutine function, and plain
asyncio (``create_task`` under a ``Semaphore(200)``).  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import inspect
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from _report import md_table, rate  # benchmarks/ is on sys.path when run as a script

TASKS = 5_000
CONCURRENCY = 200
SLEEP_S = 0.010
ROUNDS = 3
GOAL_SLEEP_RATE = 18_000  # 90% of the 20,000/s that 200-way 10 ms sleeps allow
CHILD_TIMEOUT_S = 300

# The cytask.Engine every scenario uses: auto-scaling from 2 workers up to 200.
CYTASK_ENGINE_KWARGS: dict[str, Any] = {
    "workers": 2,
    "max_workers": CONCURRENCY,
    "async_concurrency": CONCURRENCY,
}
# A fixed pool of 200: stands in while the installed Engine has no ``max_workers``
# (checked with inspect.signature), and otherwise runs as an extra row beside it.
# Keys the installed Engine does not accept are dropped, and the header says so.
CYTASK_FIXED_KWARGS: dict[str, Any] = {"workers": CONCURRENCY, "async_concurrency": CONCURRENCY}


# ---------------------------------------------------------------------------
# Workloads


def noop() -> None:
    pass


def sleep_sync() -> None:
    time.sleep(SLEEP_S)


async def noop_async() -> None:
    pass


async def sleep_async() -> None:
    await asyncio.sleep(SLEEP_S)


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    fn: Callable[[], Any]
    is_async: bool
    sleeps: bool


SCENARIOS = [
    Scenario("noop", "NoOp", noop, False, False),
    Scenario("sleep", "Sleep 10ms (time.sleep)", sleep_sync, False, True),
    Scenario("noop-async", "NoOp async", noop_async, True, False),
    Scenario("sleep-async", "Sleep 10ms (asyncio.sleep)", sleep_async, True, True),
]
SCENARIO_BY_KEY = {s.key: s for s in SCENARIOS}


# ---------------------------------------------------------------------------
# Child side: one (system, scenario) run in this process


class NotAvailable(Exception):
    """The system cannot run this scenario; the message says why."""


Timing = tuple[float, float, float]  # first submit, last submit returned, last completion


def engine_accepts() -> set[str]:
    import cytask

    return set(inspect.signature(cytask.Engine).parameters)


def has_autoscale() -> bool:
    return "max_workers" in engine_accepts()


def cytask_kwargs(fixed: bool = False) -> dict[str, Any]:
    """The Engine kwargs to use, minus the keys the installed Engine does not take."""
    chosen = CYTASK_FIXED_KWARGS if fixed or not has_autoscale() else CYTASK_ENGINE_KWARGS
    accepted = engine_accepts()
    return {k: v for k, v in chosen.items() if k in accepted}


def run_cytask(sc: Scenario, n: int, fixed: bool = False) -> Timing:
    import cytask

    eng = cytask.Engine(**cytask_kwargs(fixed))
    submit, fn = eng.submit, sc.fn
    try:
        t0 = time.perf_counter()
        handles = [submit(fn) for _ in range(n)]
        t1 = time.perf_counter()
        for h in handles:
            h.result()
        t2 = time.perf_counter()
    except Exception as exc:
        if sc.is_async:
            print(f"cytask async: {type(exc).__name__}: {exc}", file=sys.stderr)
            raise NotAvailable("async tasks not available") from exc
        raise
    finally:
        eng.shutdown(wait=True, cancel_pending=True)
    return t0, t1, t2


def run_executor(sc: Scenario, n: int) -> Timing:
    if sc.is_async:
        raise NotAvailable("ThreadPoolExecutor runs no coroutines")
    with ThreadPoolExecutor(CONCURRENCY) as ex:
        submit, fn = ex.submit, sc.fn
        t0 = time.perf_counter()
        futures = [submit(fn) for _ in range(n)]
        t1 = time.perf_counter()
        for f in futures:
            f.result()
        t2 = time.perf_counter()
    return t0, t1, t2


def run_catzilla(sc: Scenario, n: int) -> Timing:
    """Catzilla 0.2.3 with 200 workers.

    ``TaskResult.wait()`` never returns, so we wait on the Future it keeps in
    ``_result``; ``async def`` tasks come back as un-awaited coroutines.
    """
    if sc.is_async:
        raise NotAvailable("Catzilla 0.2.3 returns async def tasks un-awaited")
    with contextlib.redirect_stdout(io.StringIO()):  # its banners
        from catzilla import Catzilla  # type: ignore[import-untyped]

        app = Catzilla(show_banner=False, log_requests=False, production=True)
        app.enable_background_tasks(workers=CONCURRENCY, queue_size=4 * n)
    add, fn = app.add_task, sc.fn
    try:
        t0 = time.perf_counter()
        results = [add(fn) for _ in range(n)]
        t1 = time.perf_counter()
        for r in results:
            r._result.result()
        t2 = time.perf_counter()
    finally:
        with contextlib.redirect_stdout(io.StringIO()):  # the handler it registers at exit
            app._shutdown_tasks()
    return t0, t1, t2


def run_asyncio(sc: Scenario, n: int) -> Timing:
    if not sc.is_async:
        raise NotAvailable("asyncio runs coroutines only")
    work = sc.fn

    async def main() -> Timing:
        sem = asyncio.Semaphore(CONCURRENCY)

        async def guarded() -> None:
            async with sem:
                await work()

        t0 = time.perf_counter()
        tasks = [asyncio.create_task(guarded()) for _ in range(n)]
        t1 = time.perf_counter()
        await asyncio.gather(*tasks)
        t2 = time.perf_counter()
        return t0, t1, t2

    return asyncio.run(main())


def run_cytask_fixed(sc: Scenario, n: int) -> Timing:
    return run_cytask(sc, n, fixed=True)


RUNNERS: dict[str, Callable[[Scenario, int], Timing]] = {
    "cytask": run_cytask,
    "cytask-fixed": run_cytask_fixed,
    "executor": run_executor,
    "catzilla": run_catzilla,
    "asyncio": run_asyncio,
}


def child(system: str, scenario: str, n: int) -> None:
    sc = SCENARIO_BY_KEY[scenario]
    out: dict[str, Any]
    try:
        t0, t1, t2 = RUNNERS[system](sc, n)
    except NotAvailable as exc:
        out = {"error": str(exc)}
    else:
        out = {"enqueue": n / (t1 - t0), "process": n / (t2 - t0)}
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out), flush=True)


# ---------------------------------------------------------------------------
# Parent side: rounds of subprocesses, then the table


@dataclass
class Row:
    scenario: Scenario
    system: str
    label: str
    enqueue: list[float] = field(default_factory=list)
    process: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    error: str = ""
    detail: str = ""


def workers_label(kwargs: dict[str, Any]) -> str:
    if "max_workers" in kwargs:
        return f"{kwargs['workers']}-{kwargs['max_workers']} workers"
    return f"{kwargs['workers']} workers"


def plan(with_catzilla: bool) -> list[Row]:
    auto = workers_label(cytask_kwargs())
    fixed = workers_label(cytask_kwargs(fixed=True))
    rows: list[Row] = []
    for sc in SCENARIOS:
        if sc.is_async:
            rows.append(Row(sc, "cytask", "cytask Engine.submit(async def)"))
            rows.append(Row(sc, "asyncio", f"asyncio create_task + Semaphore({CONCURRENCY})"))
        else:
            rows.append(Row(sc, "cytask", f"cytask Engine.submit ({auto})"))
            if has_autoscale():
                rows.append(Row(sc, "cytask-fixed", f"cytask Engine.submit ({fixed})"))
            rows.append(Row(sc, "executor", f"ThreadPoolExecutor({CONCURRENCY})"))
            if with_catzilla:
                rows.append(Row(sc, "catzilla", f"Catzilla add_task ({CONCURRENCY} workers)"))
    return rows


def run_in_subprocess(row: Row, n: int) -> None:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", row.system, row.scenario.key]
    cmd += ["--tasks", str(n)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        row.error = f"timed out after {CHILD_TIMEOUT_S} s"
        return
    lines = proc.stdout.strip().splitlines()
    stderr_tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    if proc.returncode != 0 or not lines:
        row.error = f"crashed (exit {proc.returncode})"
        row.detail = stderr_tail
        return
    result = json.loads(lines[-1])
    if "error" in result:
        row.error = result["error"]
        row.detail = stderr_tail if proc.stderr.strip() else ""
        return
    row.enqueue.append(result["enqueue"])
    row.process.append(result["process"])
    row.rss_mb.append(result["rss_mb"])


def report(rows: list[Row], n: int) -> str:
    table = []
    for r in rows:
        if r.error or not r.process:
            na = f"n/a ({r.error})" if r.error else "n/a"
            table.append([r.scenario.title, r.label, f"{n:,}", na, "", ""])
            continue
        table.append(
            [
                r.scenario.title,
                r.label,
                f"{n:,}",
                rate(statistics.median(r.enqueue)),
                f"{rate(statistics.median(r.process))} ({rate(min(r.process))}-"
                f"{rate(max(r.process))})",
                f"{statistics.median(r.rss_mb):.0f}",
            ]
        )
    out = [
        md_table(
            ["scenario", "system", "tasks", "enqueue/s", "process/s (range)", "peak RSS MB"],
            table,
            right=2,
        )
    ]
    goals = []
    for r in rows:
        if not r.system.startswith("cytask") or not r.scenario.sleeps:
            continue
        goal = f"{r.scenario.title}, {r.label}: process >= {GOAL_SLEEP_RATE:,}/s"
        if r.error or not r.process:
            goals.append([goal, "n/a", "n/a"])
            continue
        med = statistics.median(r.process)
        goals.append([goal, rate(med), "PASS" if med >= GOAL_SLEEP_RATE else "FAIL"])
    out += ["", md_table(["goal (cytask)", "measured", "result"], goals)]
    notes = sorted({f"{r.label}: {r.error}: {r.detail}" for r in rows if r.detail})
    if notes:
        out += ["", *(f"- {note}" for note in notes)]
    return "\n".join(out)


def header(rounds: int, n: int, with_catzilla: bool) -> str:
    import cytask

    catz = "not installed"
    if with_catzilla:
        from importlib.metadata import version

        catz = version("catzilla")
    chosen = CYTASK_ENGINE_KWARGS if has_autoscale() else CYTASK_FIXED_KWARGS
    dropped = sorted(set(chosen) - engine_accepts())
    dropped_note = f" (not accepted yet, dropped: {', '.join(dropped)})" if dropped else ""
    if not has_autoscale():
        dropped_note += " (no max_workers yet: the fixed pool stands in)"
    return (
        f"cytask {cytask.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, catzilla {catz}\n"
        f"{n:,} tasks per run, concurrency {CONCURRENCY}, sleep {SLEEP_S * 1e3:g} ms, "
        f"medians of {rounds} round(s), one subprocess per run\n"
        f"cytask.Engine kwargs: {cytask_kwargs()}{dropped_note}"
        + (f"; extra row: {cytask_kwargs(fixed=True)}" if has_autoscale() else "")
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--rounds", type=int, help=f"rounds (median reported; {ROUNDS})")
    parser.add_argument("--tasks", type=int, default=TASKS, help=f"tasks per run ({TASKS})")
    parser.add_argument("--no-catzilla", action="store_true", help="skip Catzilla")
    parser.add_argument("--child", nargs=2, metavar=("SYSTEM", "SCENARIO"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], args.tasks)
        return 0
    rounds = max(1, args.rounds or (1 if args.quick else ROUNDS))
    with_catzilla = importlib.util.find_spec("catzilla") is not None and not args.no_catzilla
    rows = plan(with_catzilla)
    print(header(rounds, args.tasks, with_catzilla), flush=True)
    started = time.perf_counter()
    for rnd in range(rounds):
        for row in rows:
            if row.error:
                continue
            run_in_subprocess(row, args.tasks)
            last = f"process {rate(row.process[-1])}/s" if not row.error else row.error
            print(
                f"  round {rnd + 1}: {row.scenario.title} / {row.label}: {last}",
                file=sys.stderr,
                flush=True,
            )
    print(f"  total {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print()
    print(report(rows, args.tasks))
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
