"""Argument checks shared by the public entry points: fail early, name the argument."""

from __future__ import annotations

import math
from typing import Any

from cytask._enums import Priority

__all__ = ["check_callable", "check_int", "check_nonneg_number", "check_priority"]


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


def check_int(value: object, name: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Expected int for {name}, got {_type_name(value)}: {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"Expected {name} >= {minimum}, got {value!r}")
    return value


def check_nonneg_number(
    value: Any, name: str, *, allow_none: bool = False, positive: bool = False
) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        expected = "int or float" + (" or None" if allow_none else "")
        raise TypeError(f"Expected {expected} for {name}, got {_type_name(value)}: {value!r}")
    if math.isnan(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"Expected {name} {bound}, got {value!r}")
    return float(value)
