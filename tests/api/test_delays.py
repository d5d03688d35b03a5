"""Delays: ``countdown``, ``eta`` and ``delay`` run no earlier than asked and soon after.

The task records ``time.monotonic()`` when it starts; the bound after the deadline
is generous (0.5 s) for a noisy 2-core machine, the bound before it is exact.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Callable

import pytest

from cytask import CancelledError, Engine, TaskStatus, task

LATE = 0.5  # how late a delayed task may start on a busy machine


def stamp() -> float:
    return time.monotonic()


def test_countdown_runs_no_earlier_and_soon_after(engine: Engine) -> None:
    t = task(engine=engine)(stamp)
    for countdown in (0.05, 0.2):
        t0 = time.monotonic()
        h = t.apply_async(countdown=countdown)
        ran = h.result(timeout=30)
        assert t0 + countdown <= ran <= t0 + countdown + LATE


def test_add_task_delay(engine: Engine) -> None:
    t0 = time.monotonic()
    ran = engine.add_task(stamp, delay=0.1).result(timeout=30)
    assert t0 + 0.1 <= ran <= t0 + 0.1 + LATE


@pytest.mark.parametrize("aware", [False, True], ids=["naive", "aware"])
def test_eta_datetime(engine: Engine, aware: bool) -> None:
    t = task(engine=engine)(stamp)
    tz = dt.timezone(dt.timedelta(hours=5)) if aware else None
    t0 = time.monotonic()
    eta = dt.datetime.now(tz) + dt.timedelta(seconds=0.2)
    ran = t.apply_async(eta=eta).result(timeout=30)
    # the datetime was taken just after t0, so t0 + 0.2 is a lower bound of the deadline
    assert t0 + 0.2 <= ran <= t0 + 0.2 + LATE


def test_eta_in_the_past_runs_at_once(engine: Engine) -> None:
    t = task(engine=engine)(stamp)
    t0 = time.monotonic()
    h = t.apply_async(eta=dt.datetime.now() - dt.timedelta(hours=1))
    assert h.result(timeout=30) <= t0 + LATE


def test_status_is_scheduled_until_due(engine: Engine) -> None:
    ran = threading.Event()
    t = task(engine=engine)(ran.set)
    h = t.apply_async(countdown=60)
    assert h.status is TaskStatus.SCHEDULED
    assert not h.done() and not h.running()
    assert engine.get(h.task_id) is h
    assert engine.stats().scheduled_tasks == 1
    assert h.cancel() is True
    assert engine.stats().scheduled_tasks == 0
    assert not ran.is_set()


def test_status_goes_from_scheduled_to_running(
    engine: Engine, gate: threading.Event, wait_until: Callable[..., None]
) -> None:
    h = engine.add_task(gate.wait, delay=0.05)
    assert h.status is TaskStatus.SCHEDULED
    wait_until(lambda: h.status is TaskStatus.RUNNING, what="the delayed task to start")
    gate.set()
    assert h.result(timeout=10) is True


def test_an_earlier_deadline_added_later_wakes_the_timer(engine: Engine) -> None:
    # The timer sleeps until its earliest deadline: a new, earlier one must wake it.
    far = engine.add_task(stamp, delay=60)
    t0 = time.monotonic()
    near = engine.add_task(stamp, delay=0.05)
    assert t0 + 0.05 <= near.result(timeout=30) <= t0 + 0.05 + LATE
    assert far.status is TaskStatus.SCHEDULED
    far.cancel()


def test_delayed_tasks_run_in_deadline_order(
    make_engine: Callable[..., Engine], rng: random.Random
) -> None:
    eng = make_engine(workers=1)  # one worker: run order is enqueue order
    order: list[int] = []
    offsets = list(range(20))
    rng.shuffle(offsets)
    handles = [eng.add_task(order.append, i, delay=0.05 + 0.01 * i) for i in offsets]
    for h in handles:
        h.result(timeout=30)
    assert order == sorted(offsets)


def test_many_delays_each_on_time(engine: Engine, rng: random.Random) -> None:
    t0 = time.monotonic()
    delays = [rng.uniform(0.0, 0.3) for _ in range(200)]
    handles = [(d, engine.add_task(stamp, delay=d)) for d in delays]
    for d, h in handles:
        ran = h.result(timeout=30)
        assert t0 + d <= ran <= time.monotonic()
    last = max(h.result(timeout=0) for _, h in handles)
    assert last <= t0 + max(delays) + LATE * 2


def test_zero_delay_is_not_scheduled(engine: Engine, gate: threading.Event) -> None:
    h = engine.add_task(gate.wait, delay=0)
    assert h.status is not TaskStatus.SCHEDULED
    gate.set()
    assert h.result(timeout=10) is True


def test_shutdown_cancels_tasks_not_yet_due(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=1)
    ran = threading.Event()
    h = eng.add_task(ran.set, delay=60)
    t0 = time.monotonic()
    eng.shutdown(wait=True, timeout=30)
    assert time.monotonic() - t0 < 30  # did not wait for the deadline
    assert h.cancelled()
    with pytest.raises(CancelledError):
        h.result(timeout=0)
    assert not ran.is_set()
