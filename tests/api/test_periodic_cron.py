"""``Engine.every()`` and ``Engine.cron()``: recurring submissions."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

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


NY = "America/New_York"


def _ts(y: int, mo: int, d: int, h: int, mi: int, tz: str = NY) -> float:
    return dt.datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(tz)).timestamp()


@pytest.mark.parametrize(
    ("expr", "after", "expected", "hours"),
    [
        # spring forward (2025-03-09 02:00 EST -> 03:00 EDT): 09:00 EDT, 23 h later
        # (a fixed UTC offset gave 10:00 EDT)
        ("0 9 * * *", _ts(2025, 3, 8, 9, 0), dt.datetime(2025, 3, 9, 13, 0), 23),
        # fall back (2025-11-02 02:00 EDT -> 01:00 EST): 09:00 EST, 25 h later
        ("0 9 * * *", _ts(2025, 11, 1, 9, 0), dt.datetime(2025, 11, 2, 14, 0), 25),
        # a time in the skipped hour runs at the end of the gap, 03:00 EDT
        ("30 2 * * *", _ts(2025, 3, 8, 3, 0), dt.datetime(2025, 3, 9, 7, 0), None),
        # a time in the repeated hour runs once, at its first occurrence (EDT) ...
        ("30 1 * * *", _ts(2025, 11, 1, 3, 0), dt.datetime(2025, 11, 2, 5, 30), None),
        # ... and not again an hour later (01:30 EST): next is the day after
        ("30 1 * * *", _ts(2025, 11, 2, 1, 31), dt.datetime(2025, 11, 3, 6, 30), None),
    ],
)
def test_cron_across_dst_in_a_named_zone(
    expr: str, after: float, expected: dt.datetime, hours: int | None
) -> None:
    cron = CronExpression(expr, tz=NY)
    due = cron.next_timestamp(after)
    assert due == expected.replace(tzinfo=dt.UTC).timestamp()
    if hours is not None:
        assert due - after == hours * 3600


def test_every_minute_keeps_running_through_the_repeated_hour() -> None:
    cron = CronExpression("*/30 * * * *", tz=NY)
    t = _ts(2025, 11, 2, 0, 50)
    fired = []
    for _ in range(5):
        t = cron.next_timestamp(t)
        fired.append(t)
    # 01:00 EDT, 01:30 EDT, 01:00 EST, 01:30 EST, 02:00 EST: every 30 real minutes
    assert [b - a for a, b in itertools.pairwise(fired)] == [1800.0] * 4


def test_cron_next_after_keeps_a_zoneinfo() -> None:
    tz = ZoneInfo(NY)
    due = CronExpression("0 9 * * *").next_after(dt.datetime(2025, 3, 8, 9, 0, tzinfo=tz))
    assert due == dt.datetime(2025, 3, 9, 9, 0, tzinfo=tz)
    assert due.utcoffset() == dt.timedelta(hours=-4)


def test_local_time_follows_dst() -> None:
    # tz=None means local time with its DST rules, not today's fixed UTC offset
    code = textwrap.dedent(
        """
        import datetime as dt
        from cytask._cron import CronExpression
        ny = dt.timezone(dt.timedelta(hours=-5))
        cron = CronExpression("0 9 * * *")
        spring = dt.datetime(2025, 3, 8, 9, 0, tzinfo=ny).timestamp()
        fall = dt.datetime(2025, 11, 1, 13, 0, tzinfo=dt.UTC).timestamp()  # 09:00 EDT
        print((cron.next_timestamp(spring) - spring) / 3600)
        print((cron.next_timestamp(fall) - fall) / 3600)
        """
    )
    env = {**os.environ, "TZ": NY}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["23.0", "25.0"]


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        # a day field that starts with '*' (even '*/2') makes both day fields required,
        # as in Vixie/Debian cron: Mondays on an odd day of the month
        ("0 0 */2 * 1", _at(2024, 1, 1, 0, 0), _at(2024, 1, 15, 0, 0)),
        ("0 0 * * 1", _at(2024, 1, 1, 0, 0), _at(2024, 1, 8, 0, 0)),
        # both restricted without '*': either one (the 3rd is odd, a Wednesday)
        ("0 0 1-31/2 * 1", _at(2024, 1, 1, 0, 0), _at(2024, 1, 3, 0, 0)),
    ],
)
def test_cron_vixie_day_rule(expr: str, after: dt.datetime, expected: dt.datetime) -> None:
    assert CronExpression(expr).next_after(after) == expected


def test_cron_tz_option(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"IANA time zone name for tz .*got 'Mars/Base'"):
        engine.cron("0 9 * * *", int, tz="Mars/Base")
    with pytest.raises(TypeError, match=r"Expected str, datetime.tzinfo or None for tz, got int"):
        engine.cron("0 9 * * *", int, tz=5)  # type: ignore[arg-type]
    # the schedule's deadline is computed in its zone: 23 h on the spring-forward day
    monkeypatch.setattr(time, "time", lambda: _ts(2025, 3, 8, 9, 0))
    p = engine.cron("0 9 * * *", int, tz=NY)
    assert p.cron is not None and p.cron.tz == ZoneInfo(NY)
    assert p._next_due - time.monotonic() == pytest.approx(23 * 3600, abs=60)
    p.cancel()
    p = engine.cron("0 9 * * *", int, tz=dt.timezone(dt.timedelta(hours=-5)))  # a tzinfo
    assert p._next_due - time.monotonic() == pytest.approx(24 * 3600, abs=60)
    p.cancel()
