"""Retries: only for ``retry_on``, exponential back-off with jitter, status "retrying",
``attempts`` counts runs, and the final error is the last one raised."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable

import pytest

from cytask import Engine, TaskOptions, TaskStatus, current_task, task
from cytask._engine import _backoff


class Flaky(Exception):
    pass


def test_retries_until_success(engine: Engine) -> None:
    seen: list[int] = []

    @task(engine=engine, retries=3)
    def flaky() -> str:
        seen.append(current_task().attempt)
        if len(seen) < 3:
            raise Flaky(f"attempt {len(seen)}")
        return "ok"

    h = flaky.delay()
    assert h.result(timeout=30) == "ok"
    assert seen == [1, 2, 3]
    assert h.attempts == 3
    assert h.status is TaskStatus.SUCCEEDED


def test_final_error_is_the_last_one_raised(engine: Engine) -> None:
    @task(engine=engine, retries=2)
    def always() -> None:
        raise Flaky(f"attempt {current_task().attempt}")

    h = always.delay()
    with pytest.raises(Flaky, match=r"^attempt 3$"):
        h.result(timeout=30)
    assert h.attempts == 3
    assert h.status is TaskStatus.FAILED


def test_no_retries_by_default(engine: Engine) -> None:
    @task(engine=engine)
    def once() -> None:
        raise Flaky("no second chance")

    h = once.delay()
    with pytest.raises(Flaky):
        h.result(timeout=30)
    assert h.attempts == 1


def test_only_retry_on_exceptions_are_retried(engine: Engine) -> None:
    @task(engine=engine, retries=5, retry_on=(ConnectionError,))
    def wrong_kind() -> None:
        raise ValueError("not retryable")

    h = wrong_kind.delay()
    with pytest.raises(ValueError):
        h.result(timeout=30)
    assert h.attempts == 1

    @task(engine=engine, retries=5, retry_on=ConnectionError)  # a bare class works too
    def then_wrong() -> None:
        if current_task().attempt == 1:
            raise ConnectionRefusedError("retryable subclass")
        raise ValueError("stops the retries")

    h = then_wrong.delay()
    with pytest.raises(ValueError, match="stops the retries"):
        h.result(timeout=30)
    assert h.attempts == 2


class Fatal(BaseException):
    pass


def test_default_retry_on_is_any_exception_not_base_exception(engine: Engine) -> None:
    @task(engine=engine, retries=2)
    def fatal() -> None:
        raise Fatal("not an Exception")

    h = fatal.delay()
    with pytest.raises(Fatal):
        h.result(timeout=30)
    assert h.attempts == 1


def test_status_is_retrying_between_attempts(
    engine: Engine, wait_until: Callable[..., None]
) -> None:
    @task(engine=engine, retries=3, retry_backoff=60)
    def slow_retry() -> None:
        raise Flaky("later")

    h = slow_retry.delay()
    # the back-off sits on the timer: stats count it as scheduled
    wait_until(lambda: engine.stats().scheduled_tasks == 1, what="the retry to be scheduled")
    assert h.status is TaskStatus.RETRYING
    assert not h.done() and h.attempts == 1
    assert engine.stats().retried_tasks == 1
    assert h.cancel() is True  # a retrying task has not started its next run
    assert h.cancelled() and h.attempts == 1


def test_backoff_grows_exponentially(engine: Engine) -> None:
    starts: list[float] = []
    base = 0.05

    @task(engine=engine, retries=3, retry_backoff=base, retry_jitter=False)
    def flaky() -> str:
        starts.append(time.monotonic())
        if len(starts) < 4:
            raise Flaky("again")
        return "ok"

    assert flaky.delay().result(timeout=30) == "ok"
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    for i, gap in enumerate(gaps):
        expected = base * 2**i  # 0.05, 0.1, 0.2
        assert expected <= gap <= expected + 0.5, (i, gaps)


def test_backoff_with_jitter_stays_within_half_and_full_delay(engine: Engine) -> None:
    starts: list[float] = []
    base = 0.1

    @task(engine=engine, retries=2, retry_backoff=base)  # jitter is on by default
    def flaky() -> str:
        starts.append(time.monotonic())
        if len(starts) < 3:
            raise Flaky("again")
        return "ok"

    assert flaky.delay().result(timeout=30) == "ok"
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    for i, gap in enumerate(gaps):
        full = base * 2**i
        assert full / 2 <= gap <= full + 0.5, (i, gaps)


def test_backoff_formula(monkeypatch: pytest.MonkeyPatch, rng: random.Random) -> None:
    plain = TaskOptions(
        "t", retries=10, retry_backoff=1.0, retry_backoff_max=10.0, retry_jitter=False
    )
    assert [_backoff(plain, n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    none = TaskOptions("t", retries=3, retry_backoff=0.0)
    assert _backoff(none, 1) == 0.0

    jittered = TaskOptions(
        "t", retries=10, retry_backoff=1.0, retry_backoff_max=10.0, retry_jitter=True
    )
    monkeypatch.setattr(random, "uniform", rng.uniform)  # _backoff imports random lazily
    for n in range(1, 7):
        full = min(2.0 ** (n - 1), 10.0)
        samples = {_backoff(jittered, n) for _ in range(200)}
        assert all(full / 2 <= s <= full for s in samples)
        assert len(samples) > 100  # jitter spreads the retries


def test_retried_tasks_are_counted(engine: Engine) -> None:
    @task(engine=engine, retries=2)
    def always() -> None:
        raise Flaky("x")

    handles = [always.delay() for _ in range(5)]
    for h in handles:
        with pytest.raises(Flaky):
            h.result(timeout=30)
    stats = engine.stats()
    assert stats.retried_tasks == 10
    assert stats.failed_tasks == 5


def test_cancel_requested_stops_retries(engine: Engine) -> None:
    started = threading.Event()
    release = threading.Event()

    @task(engine=engine, retries=5)
    def stop_me() -> None:
        started.set()
        release.wait(30)
        raise Flaky("after a cancel request")

    h = stop_me.delay()
    assert started.wait(10)
    assert h.cancel() is False  # running: only a request
    release.set()
    with pytest.raises(Flaky):
        h.result(timeout=30)
    assert h.attempts == 1


def test_many_concurrent_retrying_tasks(engine: Engine) -> None:
    lock = threading.Lock()
    counts: dict[int, int] = {}

    @task(engine=engine, retries=4)
    def flaky(i: int) -> int:
        with lock:
            counts[i] = counts.get(i, 0) + 1
            n = counts[i]
        if n <= i % 5:
            raise Flaky(str(n))
        return i

    handles = [flaky.delay(i) for i in range(300)]
    assert [h.result(timeout=60) for h in handles] == list(range(300))
    assert [h.attempts for h in handles] == [i % 5 + 1 for i in range(300)]


def test_shutdown_cancels_a_task_waiting_to_retry(
    make_engine: Callable[..., Engine], wait_until: Callable[..., None]
) -> None:
    eng = make_engine(workers=1)

    @task(engine=eng, retries=3, retry_backoff=60)
    def flaky() -> None:
        raise Flaky("later")

    h = flaky.delay()
    wait_until(lambda: eng.stats().scheduled_tasks == 1, what="the retry to be scheduled")
    t0 = time.monotonic()
    eng.shutdown(wait=True, timeout=30)
    assert time.monotonic() - t0 < 30  # did not wait out the back-off
    assert h.cancelled() and h.attempts == 1
