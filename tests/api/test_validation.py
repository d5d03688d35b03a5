"""Bad input raises at decoration or submit time, naming the argument, what was expected
and what came."""

from __future__ import annotations

import datetime as dt
import functools
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
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
        ("\u0663 * * * *", r"Invalid minute field '\u0663'.*expected a number 0-59"),  # Arabic 3
        ("* \uff11 * * *", r"Invalid hour field"),  # fullwidth 1
        ("*/\u0663 * * * *", r"step after '/' must be a positive number"),
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
        ({"linger": -0.001}, ValueError, "Expected linger >= 0"),
        ({"linger": "1ms"}, TypeError, "Expected int or float for linger, got str"),
        ({"linger": 1}, ValueError, r"Expected linger in \[0, 0.1\] seconds"),
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


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"workers": 2**31}, r"Expected workers <= 1023 .*got 2147483648"),
        ({"workers": 1, "max_workers": 2**40}, r"Expected max_workers <= 1023"),
        ({"queue_size": 2**63}, r"Expected queue_size <= 16777216 .*got 9223372036854775808"),
        ({"max_results": 2**63}, r"Expected max_results <= 67108864 .*got 9223372036854775808"),
        ({"starvation_limit": 0}, r"Expected starvation_limit >= 1, got 0"),
        ({"starvation_limit": 2**40}, r"Expected starvation_limit <= 2147483647"),
    ],
)
def test_huge_engine_options_name_the_argument(kwargs: dict[str, Any], match: str) -> None:
    # these were bare OverflowErrors from the C conversion, naming nothing
    with pytest.raises(ValueError, match=match):
        Engine(**kwargs)


def test_huge_retries_name_the_argument() -> None:
    with pytest.raises(ValueError, match=r"Expected retries <= 2147483647, got 1099511627776"):
        task(retries=2**40)(noop)


@pytest.mark.parametrize(
    ("timeout", "error", "match"),
    [
        ("1", TypeError, r"Expected int, float or None for timeout, got str: '1'"),
        (float("nan"), ValueError, r"Expected timeout >= 0 or None, got nan"),
        (-1, ValueError, r"Expected timeout >= 0 or None, got -1"),
        (True, TypeError, r"got bool"),
    ],
)
def test_wait_timeouts_are_checked_even_when_done(
    engine: Engine, timeout: object, error: type[Exception], match: str
) -> None:
    h = engine.submit(int, 1)
    assert h.result(timeout=30) == 1  # done: the bad timeout used to pass unchecked
    for call in (h.result, h.exception, h.wait):
        with pytest.raises(error, match=match):
            call(timeout)
    pending = engine.add_task(noop, delay=60)
    with pytest.raises(error, match=match):
        pending.result(timeout)
    pending.cancel()


def test_huge_and_infinite_wait_timeouts_mean_no_limit(engine: Engine) -> None:
    h = engine.submit(int, 4)
    assert h.result(timeout=float("inf")) == 4
    assert h.result(timeout=1e300) == 4
    assert engine.submit(int, 5).result(timeout=1e18) == 5  # past int64 nanoseconds
    assert engine.submit(int, 6).result(timeout=10**400) == 6  # past the largest float


def test_ints_past_the_largest_float_name_the_argument() -> None:
    with pytest.raises(ValueError, match=r"Expected submit_timeout <= 1.79769e\+308"):
        Engine(workers=1, submit_timeout=10**400)
    with pytest.raises(ValueError, match=r"Expected timeout <= 1.79769e\+308"):
        cytask.TaskOptions("t", timeout=10**400)


def gen_fn() -> Iterator[int]:
    yield 1


async def agen_fn() -> AsyncIterator[int]:
    yield 1


@pytest.mark.parametrize("fn", [gen_fn, agen_fn])
def test_generator_functions_are_rejected(engine: Engine, fn: Callable[[], Any]) -> None:
    # they "succeeded" without running their body
    with pytest.raises(TypeError, match=r"generator function .*body would never run"):
        task(fn)
    with pytest.raises(TypeError, match=r"generator function .*body would never run") as info:
        engine.submit(fn)
    assert ("async generator" in str(info.value)) == (fn is agen_fn)
    with pytest.raises(TypeError, match=r"generator function"):
        engine.add_task(fn, delay=1)
    assert engine.stats().submitted_tasks == 0


def test_a_callable_returning_a_generator_fails_its_task(engine: Engine) -> None:
    h = engine.submit(functools.partial(gen_fn))  # not detectable at submit
    with pytest.raises(TypeError, match=r"returned a generator: its body never ran"):
        h.result(timeout=30)


def test_get_with_a_bool_is_no_task(engine: Engine) -> None:
    h = engine.submit(int)
    h.result(timeout=30)
    assert h.task_id == 1 and engine.get(1) is h
    assert engine.get(True) is None  # True == 1, but it is no task id


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(
    ("signals", "error", "match"),
    [
        ([signal.SIGTERM, signal.SIGKILL], ValueError, r"catchable signals .*SIGKILL \(9\)"),
        ([signal.SIGINT, signal.SIGSTOP], ValueError, r"catchable signals .*SIGSTOP"),
        ([signal.SIGTERM, 10**6], ValueError, r"valid signal numbers in signals, got 1000000"),
        ([signal.SIGTERM, "SIGINT"], TypeError, r"signal numbers .* got str: 'SIGINT'"),
        (signal.SIGTERM, TypeError, r"Expected a list of signals for signals"),
        ([], ValueError, r"at least one signal"),
        ([signal.SIGTERM, signal.SIGTERM], ValueError, r"distinct signals"),
    ],
)
def test_signal_handlers_validate_all_before_installing_any(
    engine: Engine, signals: object, error: type[Exception], match: str
) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(error, match=match):
        engine.install_signal_handlers(signals=signals)  # type: ignore[arg-type]
    # nothing was installed: it used to install SIGTERM, then fail on SIGKILL
    assert {s: signal.getsignal(s) for s in before} == before
