"""``Engine.every()`` and ``Engine.cron()``: recurring submissions."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable

import pytest

from cytask import Engine, Periodic, Priority, current_task, task
from cytask._cron import CronExpression

LATE = 0.5


def test_every_runs_on_a_fixed_grid(engine: Engine) -> None:
    interval = 0.05
    stamps: list[float] = []
    five = threading.Event()

    def tick() -> None:
        stamps.append(time.monotonic())
        if len(stamps) == 5:
            five.set()

    t0 = time.monotonic()
    p = engine.every(interval, tick)
    assert isinstance(p, Periodic)
    assert five.wait(30)
    p.cancel()
    # the n-th run is due at start + n * interval: no earlier, and no drift
    for n, ran in enumerate(stamps[:5], start=1):
        assert t0 + n * interval <= ran <= t0 + n * interval + LATE
    assert p.runs >= 5


def test_every_passes_args_kwargs_and_priority(engine: Engine) -> None:
    got = threading.Event()
    seen: list[tuple[object, ...]] = []

    def record(a: int, *, b: str) -> None:
        seen.append((a, b, current_task().priority))
        got.set()

    p = engine.every(0.02, record, 1, b="two", priority=Priority.HIGH)
    assert got.wait(30)
    p.cancel()
    assert seen[0] == (1, "two", Priority.HIGH)


def test_cancel_stops_future_runs(engine: Engine, wait_until: Callable[..., None]) -> None:
    interval = 0.02
    p = engine.every(interval, int)
    wait_until(lambda: p.runs >= 3, what="three runs")
    p.cancel()
    assert p.cancelled
    runs = p.runs
    # a delayed task due after several more intervals proves the timer went past them
    engine.add_task(int, delay=interval * 10).result(timeout=30)
    assert p.runs <= runs + 1  # at most one that was already firing when we cancelled
    assert "cancelled" in repr(p)


def test_periodic_task_keeps_its_retries(engine: Engine) -> None:
    attempts: list[int] = []
    finished = threading.Event()

    @task(engine=engine, retries=2)
    def flaky() -> None:
        attempts.append(current_task().attempt)
        if current_task().attempt < 3:
            raise ConnectionError
        finished.set()

    p = engine.every(0.05, flaky)
    assert finished.wait(30)
    p.cancel()
    assert attempts[:3] == [1, 2, 3]


def test_shutdown_stops_periodics(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=1)
    p = eng.every(60, int)
    eng.shutdown(wait=True, timeout=30)
    assert p.cancelled


def test_periodic_schedule_skips_missed_slots() -> None:
    calls: list[float] = []

    class FakeEngine:
        closed = False

        def _timer_call_at(self, deadline: float, action: object, *args: object) -> bool:
            calls.append(deadline)
            return True

    p = Periodic(FakeEngine(), int, (), {}, 2, interval=1.0)  # type: ignore[arg-type]
    p._next_due = time.monotonic() - 100.5  # as if the process was frozen for 100 s
    before = time.monotonic()
    p._schedule_next()
    assert len(calls) == 1
    assert before < calls[0] <= time.monotonic() + 1.0  # the next slot, not 100 stale ones


def test_cron_fires_at_the_next_matching_time(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pretend every match is 0.1 s away, so the wiring is tested without waiting a minute
    monkeypatch.setattr(CronExpression, "next_after", lambda self, t: t + dt.timedelta(seconds=0.1))
    fired = threading.Event()
    t0 = time.monotonic()
    stamps: list[float] = []
    p = engine.cron("*/5 * * * *", lambda tag: (stamps.append(time.monotonic()), fired.set()), "x")
    assert fired.wait(30)
    p.cancel()
    assert t0 + 0.1 <= stamps[0] <= t0 + 0.1 + LATE
    assert p.cron is not None and p.cron.expression == "*/5 * * * *"


def _at(y: int, mo: int, d: int, h: int, mi: int) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi)


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("*/5 * * * *", _at(2024, 1, 1, 10, 3), _at(2024, 1, 1, 10, 5)),
        ("*/5 * * * *", _at(2024, 1, 1, 10, 5), _at(2024, 1, 1, 10, 10)),  # strictly after
        ("0 * * * *", _at(2024, 1, 1, 10, 0), _at(2024, 1, 1, 11, 0)),
        ("30 2 * * *", _at(2024, 1, 1, 3, 0), _at(2024, 1, 2, 2, 30)),
        ("0 0 1 * *", _at(2024, 1, 15, 0, 0), _at(2024, 2, 1, 0, 0)),
        ("0 9 * * mon-fri", _at(2024, 1, 6, 12, 0), _at(2024, 1, 8, 9, 0)),  # Sat -> Mon
        ("0 0 * * 7", _at(2024, 1, 1, 0, 0), _at(2024, 1, 7, 0, 0)),  # 7 is Sunday
        ("0 0 * * 0", _at(2024, 1, 1, 0, 0), _at(2024, 1, 7, 0, 0)),
        ("0 0 29 feb *", _at(2024, 3, 1, 0, 0), _at(2028, 2, 29, 0, 0)),
        ("0 0 13 * fri", _at(2024, 1, 1, 0, 0), _at(2024, 1, 5, 0, 0)),  # either day field
        ("15,45 8-9 * jan *", _at(2024, 1, 1, 9, 46), _at(2024, 1, 2, 8, 15)),
        ("0-10/5 * * * *", _at(2024, 1, 1, 0, 6), _at(2024, 1, 1, 0, 10)),
        ("59 23 31 12 *", _at(2024, 12, 31, 23, 59), _at(2025, 12, 31, 23, 59)),
    ],
)
def test_cron_next_after(expr: str, after: dt.datetime, expected: dt.datetime) -> None:
    assert CronExpression(expr).next_after(after) == expected


def test_cron_keeps_the_timezone() -> None:
    tz = dt.timezone(dt.timedelta(hours=-3))
    after = dt.datetime(2024, 1, 1, 10, 3, 30, tzinfo=tz)
    assert CronExpression("*/5 * * * *").next_after(after) == dt.datetime(
        2024, 1, 1, 10, 5, tzinfo=tz
    )


def test_cron_that_never_matches() -> None:
    with pytest.raises(ValueError, match="never matches"):
        CronExpression("0 0 31 feb *").next_after(dt.datetime(2024, 1, 1))
