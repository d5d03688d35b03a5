"""Bad input raises at decoration or submit time, naming the argument, what was expected
and what came."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

import cytask
from cytask import Engine, EngineClosed, InvalidTaskOptions, Priority, task


def noop() -> None:
    pass


def test_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(InvalidTaskOptions) as info:
        task(retry=3)  # type: ignore[call-overload]  # fails before a function is given
    msg = str(info.value)
    assert "'retry'" in msg
    for valid in ("priority", "retries", "retry_backoff", "retry_on", "timeout", "engine", "name"):
        assert valid in msg
    assert isinstance(info.value, ValueError) and isinstance(info.value, cytask.CytaskError)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"priority": 1}, TypeError, r"Expected a cytask.Priority for priority .*got int: 1"),
        ({"priority": "HIGH"}, TypeError, r"for priority .*got str: 'HIGH'"),
        ({"retries": -1}, ValueError, r"Expected retries >= 0, got -1"),
        ({"retries": 1.5}, TypeError, r"Expected int for retries, got float: 1.5"),
        ({"retries": True}, TypeError, r"Expected int for retries, got bool"),
        ({"retry_backoff": -0.1}, ValueError, r"Expected retry_backoff >= 0, got -0.1"),
        ({"retry_backoff": float("nan")}, ValueError, r"retry_backoff"),
        ({"retry_backoff_max": -1}, ValueError, r"retry_backoff_max >= 0"),
        ({"retry_jitter": 1}, TypeError, r"Expected bool for retry_jitter, got int"),
        ({"retry_on": ValueError()}, TypeError, r"exception class or a tuple .* for retry_on"),
        ({"retry_on": (ValueError, int)}, TypeError, r"retry_on"),
        ({"timeout": -1}, ValueError, r"Expected timeout >= 0, got -1"),
        ({"timeout": 0}, ValueError, r"Expected timeout > 0 or None, got 0"),
        ({"timeout": "10"}, TypeError, r"Expected int or float or None for timeout, got str"),
        ({"name": 5}, TypeError, r"Expected str for name, got int"),
        ({"engine": "default"}, TypeError, r"Expected a cytask.Engine or None for engine"),
    ],
)
def test_bad_option_values(options: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        task(**options)(noop)


def test_decorating_a_non_callable() -> None:
    with pytest.raises(TypeError, match="Expected a callable for the decorated object, got int"):
        task(5)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="Expected a callable"):
        task(retries=1)("not a function")  # type: ignore[arg-type]


def test_function_and_options_together() -> None:
    with pytest.raises(TypeError, match=r"@task\(\*\*options\)"):
        task(noop, retries=1)  # type: ignore[call-overload]


def test_submit_time_checks(engine: Engine) -> None:
    t = task(engine=engine)(noop)
    with pytest.raises(TypeError, match=r"Expected a cytask.Priority for priority .*got int: 2"):
        t.apply_async(priority=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Expected countdown >= 0, got -1"):
        t.apply_async(countdown=-1)
    with pytest.raises(InvalidTaskOptions, match="countdown or eta, not both"):
        t.apply_async(countdown=1, eta=dt.datetime.now())
    with pytest.raises(TypeError, match="Expected a datetime for eta, got str"):
        t.apply_async(eta="tomorrow")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Expected a tuple or list for args, got int"):
        t.apply_async(args=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Expected a dict or None for kwargs, got list"):
        t.apply_async(kwargs=[1])  # type: ignore[arg-type]
    assert engine.stats().submitted_tasks == 0  # nothing half-submitted


def test_engine_submit_checks(engine: Engine) -> None:
    with pytest.raises(TypeError, match="Expected a callable for fn, got int: 5"):
        engine.submit(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Expected a callable for fn"):
        engine.add_task(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"for priority .*got str: 'low'"):
        engine.add_task(noop, priority="low")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Expected delay >= 0, got -0\.5"):
        engine.add_task(noop, delay=-0.5)
    with pytest.raises(ValueError, match="Expected interval > 0, got 0"):
        engine.every(0, noop)
    with pytest.raises(ValueError, match="Expected interval > 0, got -1"):
        engine.every(-1, noop)
    with pytest.raises(TypeError, match="Expected a callable for fn"):
        engine.every(1, "noop")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Expected a callable for fn"):
        engine.cron("* * * * *", 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"for priority"):
        engine.every(1, noop, priority=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Expected timeout >= 0 or None, got -1"):
        engine.submit(noop).result(timeout=-1)


@pytest.mark.parametrize(
    ("expr", "match"),
    [
        ("* * * *", r"Expected 5 fields .* got 4: '\* \* \* \*'"),
        ("60 * * * *", r"Invalid minute field '60' .*: 60 is outside 0-59"),
        ("* 24 * * *", r"Invalid hour field '24'.*outside 0-23"),
        ("* * 0 * *", r"Invalid day of month field '0'.*outside 1-31"),
        ("* * * 13 *", r"Invalid month field '13'"),
        ("* * * * 8", r"Invalid day of week field '8'"),
        ("*/0 * * * *", r"Invalid minute field '\*/0'.*step after '/' must be a positive"),
        ("5-1 * * * *", r"range 5-1 runs backwards"),
        ("* * * foo *", r"Invalid month field 'foo'.*expected a number 1-12 or a name"),
        ("a * * * *", r"Invalid minute field 'a'.*expected a number 0-59"),
    ],
)
def test_invalid_cron_expression(engine: Engine, expr: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        engine.cron(expr, noop)


def test_cron_expression_must_be_a_string(engine: Engine) -> None:
    with pytest.raises(TypeError, match="Expected str for cron expression, got int"):
        engine.cron(5, noop)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"workers": 0}, ValueError, "Expected workers >= 1, got 0"),
        ({"workers": "2"}, TypeError, "Expected int for workers, got str"),
        ({"workers": 4, "max_workers": 2}, ValueError, r"Expected max_workers >= workers \(4\)"),
        ({"queue_size": 1}, ValueError, "Expected queue_size >= 2"),
        ({"submit_timeout": -1}, ValueError, "Expected submit_timeout >= 0"),
        ({"result_ttl": -1}, ValueError, "Expected result_ttl >= 0"),
        ({"max_results": -1}, ValueError, "Expected max_results >= 0"),
        ({"async_concurrency": 0}, ValueError, "Expected async_concurrency >= 1"),
        ({"worker_idle_timeout": 0}, ValueError, "Expected worker_idle_timeout > 0"),
        ({"name": 3}, TypeError, "Expected str or None for name, got int"),
    ],
)
def test_engine_options(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Engine(**kwargs)


def test_submit_after_shutdown(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine(workers=1)
    t = task(engine=eng)(noop)
    eng.shutdown()
    for submit in (
        lambda: eng.submit(noop),
        lambda: eng.add_task(noop),
        lambda: t.delay(),
        lambda: eng.every(1, noop),
        lambda: eng.cron("* * * * *", noop),
    ):
        with pytest.raises(EngineClosed, match="shut down"):
            submit()
    assert issubclass(EngineClosed, RuntimeError)


def test_valid_priorities_are_accepted(engine: Engine) -> None:
    for prio in Priority:
        assert task(engine=engine, priority=prio)(lambda: 1).delay().result(timeout=30) == 1
