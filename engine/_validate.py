"""Argument checks shared by the public entry points: fail early, name the argument."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterable
from typing import Any

from cytask._enums import Priority

#: the shortest durable lease (s): the feeder extends leases every lease/3, and a
#: shorter one left too little slack for a round trip and a turn at the GIL (2 engines
#: on one store, lease=0.02: a live worker's 0.5 s task ran 3 times, or was
#: dead-lettered as lost 10 times)
MIN_LEASE_S = 0.1

__all__ = [
    "MIN_LEASE_S",
    "check_callable",
    "check_duration",
    "check_int",
    "check_nonneg_number",
    "check_priority",
    "check_signals",
]


def _type_name(value: object) -> str:
    return type(value).__name__


def check_callable(value: object, name: str) -> None:
    if not callable(value):
        raise TypeError(f"Expected a callable for {name}, got {_type_name(value)}: {value!r}")


def check_priority(value: object, name: str = "priority") -> Priority:
    if type(value) is not Priority:
        raise TypeError(
            f"Expected a cytask.Priority for {name} (CRITICAL, HIGH, NORMAL, LOW), "
            f"got {_type_name(value)}: {value!r}"
        )
    return value


def check_int(
    value: object,
    name: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    why: str = "",
) -> int:
    """An int (not a bool) within [minimum, maximum]; `why` explains the maximum."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Expected int for {name}, got {_type_name(value)}: {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"Expected {name} >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"Expected {name} <= {maximum}{why}, got {value!r}")
    return value


def check_nonneg_number(
    value: Any, name: str, *, allow_none: bool = False, positive: bool = False
) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        expected = "int or float" + (" or None" if allow_none else "")
        raise TypeError(f"Expected {expected} for {name}, got {_type_name(value)}: {value!r}")
    if value != value or value < 0 or (positive and value == 0):  # NaN != NaN
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"Expected {name} {bound}, got {value!r}")
    try:
        return float(value)
    except OverflowError:  # an int past the largest float
        raise ValueError(f"Expected {name} <= {sys.float_info.max:g}, got {value!r}") from None


# signals a process cannot catch: signal.signal() refuses them
_UNCATCHABLE = frozenset(getattr(signal, n) for n in ("SIGKILL", "SIGSTOP") if hasattr(signal, n))


def check_signals(value: object, name: str) -> list[signal.Signals]:
    """A non-empty collection of distinct catchable signals, each checked before any is used."""
    if isinstance(value, (int, str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            f"Expected a list of signals for {name} (e.g. [signal.SIGTERM]), "
            f"got {_type_name(value)}: {value!r}"
        )
    items = list(value)
    if not items:
        raise ValueError(f"Expected at least one signal in {name}, got {value!r}")
    valid = signal.valid_signals()
    out: list[signal.Signals] = []
    for sig in items:
        if isinstance(sig, bool) or not isinstance(sig, int):
            raise TypeError(
                f"Expected signal numbers (int or signal.Signals) in {name}, "
                f"got {_type_name(sig)}: {sig!r}"
            )
        if sig not in valid:
            raise ValueError(f"Expected valid signal numbers in {name}, got {sig!r}")
        if sig in _UNCATCHABLE:
            raise ValueError(
                f"Expected catchable signals in {name}, got {signal.Signals(sig).name} "
                f"({int(sig)}), which no process can handle; use SIGTERM or SIGINT"
            )
        if sig in out:
            raise ValueError(f"Expected distinct signals in {name}, got {sig!r} twice")
        out.append(signal.Signals(sig))
    return out


def check_duration(
    value: Any,
    name: str,
    *,
    allow_none: bool = False,
    positive: bool = False,
    none_means: str = "",
) -> float | None:
    """Seconds the engine schedules by (a delay, an interval, a time limit, a TTL):
    a finite number >= 0 (> 0 if `positive`).  Waits elsewhere accept inf and clamp
    huge values to "no limit"; a schedule at infinity is a mistake, said at once."""
    seconds = check_nonneg_number(value, name, allow_none=allow_none, positive=positive)
    if seconds is not None and seconds == float("inf"):
        hint = f" (None for {none_means})" if none_means else ""
        raise ValueError(f"Expected a finite number of seconds for {name}{hint}, got {value!r}")
    return seconds
