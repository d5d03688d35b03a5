"""``cytask worker``: run the durable tasks of a store in this process.

    cytask worker MODULE [MODULE ...] --store URL [--workers N] [--max-workers M]

URL: ``sqlite:////var/app/tasks.db`` (one machine) or ``redis://host:6379/0`` (many).

Imports each MODULE (registering its ``@task`` functions; the current folder is on
``sys.path``), then claims tasks from the store and runs them until SIGTERM or
SIGINT, which drain: nothing new is claimed, running tasks may finish within
``--drain-timeout`` seconds, tasks claimed but not started go back to the store.
A second signal exits at once (the store gives the running tasks to another
worker once their leases expire).  Engines that the modules create themselves
with a store only produce in a worker process: the worker's engine consumes.

Exit codes: 0 drained (or ``--burst`` found the store empty), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from cytask._validate import MIN_LEASE_S

__all__ = ["worker_main"]


def _count(option: str) -> Callable[[str], int]:
    """An argparse type: a whole number of threads >= 1, errors naming `option`."""

    def parse(text: str) -> int:
        from cytask._core import LIMITS

        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"Expected a whole number, got {text!r}") from None
        if not 1 <= value <= LIMITS["workers"]:
            raise argparse.ArgumentTypeError(
                f"Expected {option} in [1, {LIMITS['workers']}] (worker threads; a worker "
                f"with none would run nothing), got {value}"
            )
        return value

    return parse


def _seconds(
    option: str, *, positive: bool = False, finite: bool = True, minimum: float = 0.0
) -> Callable[[str], float]:
    """An argparse type: seconds >= 0 (> 0 if `positive`, >= `minimum`; inf only if not
    `finite`), checked before the worker starts, errors naming `option`."""

    def parse(text: str) -> float:
        from cytask._validate import check_duration, check_nonneg_number

        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"Expected a number of seconds, got {text!r}"
            ) from None
        check = check_duration if finite else check_nonneg_number
        try:
            check(value, option, positive=positive)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"Expected {option} >= {minimum}, got {value}")
        return value

    return parse


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = _parser()
    args = parser.parse_args(list(argv))
    if args.max_workers is not None:
        from cytask._core import LIMITS

        workers = args.workers
        if workers is None:
            workers = min(os.cpu_count() or 2, LIMITS["workers"])
        if args.max_workers < workers:
            why = "" if args.workers is not None else ": --workers defaults to the CPUs"
            parser.error(
                f"argument --max-workers: Expected --max-workers >= --workers "
                f"({workers}{why}), got {args.max_workers}"
            )
    return args


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cytask worker",
        description="Run the durable tasks of a store (see `Engine(store=...)`).",
    )
    p.add_argument("modules", nargs="+", metavar="MODULE", help="modules that define the tasks")
    p.add_argument(
        "--store",
        required=True,
        help="the store URL: sqlite:////var/app/tasks.db or redis://host:6379/0",
    )
    p.add_argument(
        "--workers", type=_count("--workers"), default=None, help="worker threads (default: CPUs)"
    )
    p.add_argument(
        "--max-workers",
        type=_count("--max-workers"),
        default=None,
        help="grow up to this many while tasks block",
    )
    p.add_argument(
        "--serializer",
        choices=("json", "pickle"),
        default="json",
        help="pickle only if you trust everyone who can write the store (default: json)",
    )
    p.add_argument(
        "--lease",
        type=_seconds("--lease", positive=True, minimum=MIN_LEASE_S),
        default=30.0,
        help="seconds before a dead worker's tasks run elsewhere (extended while running)",
    )
    p.add_argument(
        "--drain-timeout",
        type=_seconds("--drain-timeout", finite=False),
        default=30.0,
        help="on SIGTERM/SIGINT, seconds running tasks may take to finish (default 30)",
    )
    p.add_argument(
        "--result-ttl",
        type=_seconds("--result-ttl"),
        default=3600.0,
        help="seconds finished tasks stay in the store (default 3600)",
    )
    p.add_argument(
        "--burst", action="store_true", help="exit once no task is pending, scheduled or running"
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def next_progress_line(asked: float, cost: float) -> float:
    """When to redraw the progress line: once a second, or less often while counting
    costs more than 5% of that time (a store's counts() reads every row: ~0.3 s at a
    million tasks in SQLite)."""
    return asked + max(1.0, 20.0 * cost)


def worker_main(argv: Sequence[str]) -> int:
    try:
        args = _parse(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    from cytask import Engine, StoreError, _durable
    from cytask._core import report_unraisable

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    _durable.PRODUCE_ONLY = True  # engines the modules create only produce
    try:
        for name in args.modules:
            try:
                importlib.import_module(name)
            except Exception:
                print(f"cytask worker: error: cannot import {name!r}:", file=sys.stderr)
                traceback.print_exc()
                return 2
    finally:
        _durable.PRODUCE_ONLY = False
    # before the engine: its feeder claims tasks as soon as it starts, and a SIGTERM
    # from then on must drain them, not kill the process holding them
    stop = threading.Event()
    signals = 0

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            os._exit(128 + signum)  # a second signal: leave now, leases bring the tasks back
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        eng = Engine(
            workers=args.workers,
            max_workers=args.max_workers,
            store=args.store,
            serializer=args.serializer,
            lease=args.lease,
            result_ttl=args.result_ttl,
            name="cytask-worker",
        )
    except (TypeError, ValueError) as exc:
        print(f"cytask worker: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # StoreError: cannot open, locked, too new ...
        print(f"cytask worker: error: {exc}", file=sys.stderr)
        return 2
    out: TextIO = sys.stderr
    show = not args.quiet and out.isatty()
    store = eng._durable.store if eng._durable is not None else None
    assert store is not None
    if not args.quiet:
        print(
            f"cytask worker: {eng.workers} workers on {store.url} (pid {os.getpid()})",
            file=out,
            flush=True,
        )
    last_done, last_t = -1, time.monotonic()
    next_show = 0.0
    while not stop.is_set():
        stop.wait(0.002 if args.burst else 1.0)
        try:
            if args.burst and not store.has_work():
                break
            counts = None
            if show and time.monotonic() >= next_show:
                asked = time.monotonic()
                counts = store.counts()
                next_show = next_progress_line(asked, time.monotonic() - asked)
        except StoreError as exc:  # Redis restarting, a long lock: the feeder retries too
            report_unraisable(exc, "cytask worker (will retry)")
            stop.wait(1.0)
            continue
        if counts is not None:
            done = counts["succeeded"] + counts["failed"] + counts["cancelled"]
            now = time.monotonic()
            rate = 0.0 if last_done < 0 else (done - last_done) / max(now - last_t, 1e-9)
            last_done, last_t = done, now
            line = "  ".join(f"{k} {v}" for k, v in counts.items() if v)
            out.write(f"\r\x1b[K{line}  ({rate:,.0f}/s)")
            out.flush()
    if show:
        out.write("\n")
    if not args.quiet:
        print("cytask worker: draining", file=out, flush=True)
    eng.shutdown(wait=True, timeout=args.drain_timeout)
    store.close()  # this process is done with it: every connection closes now
    if not args.quiet:
        print("cytask worker: stopped", file=out, flush=True)
    return 0
