"""Five-field cron expressions: ``minute hour day-of-month month day-of-week``.

Each field takes ``*``, numbers, ranges ``a-b``, steps ``*/n`` and ``a-b/n``, and
comma lists; months and weekdays also take names (``jan``, ``mon``).  Weekday 0 and
7 are Sunday.  As in Vixie cron, when both day fields are restricted a day matches
if either does.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["CronExpression"]

_MONTHS = {
    m: i
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)


class CronExpression:
    """A parsed cron expression; ``next_after(t)`` is the first matching minute > t."""

    def __init__(self, expression: str) -> None:
        if not isinstance(expression, str):
            raise TypeError(f"Expected str for cron expression, got {type(expression).__name__}")
        parts = expression.split()
        if len(parts) != 5:
            raise ValueError(
                f"Expected 5 fields (minute hour day-of-month month day-of-week) in cron "
                f"expression, got {len(parts)}: {expression!r}"
            )
        self.expression = expression
        sets = [
            _parse_field(text, name, lo, hi, names, expression)
            for text, (name, lo, hi, names) in zip(parts, _FIELDS, strict=True)
        ]
        self.minutes, self.hours, self.days, self.months, weekdays = sets
        self.weekdays = {d % 7 for d in weekdays}
        self._dom_any = parts[2] == "*"
        self._dow_any = parts[4] == "*"

    def __repr__(self) -> str:
        return f"CronExpression({self.expression!r})"

    def _day_matches(self, day: dt.date) -> bool:
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self._dom_any or self._dow_any:
            return dom and dow
        return dom or dow

    def next_after(self, after: dt.datetime) -> dt.datetime:
        """The first matching minute strictly after `after` (same tzinfo)."""
        t = after.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        limit = t + dt.timedelta(days=366 * 5)
        while t < limit:
            if t.month not in self.months or not self._day_matches(t.date()):
                t = (t + dt.timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if t.hour not in self.hours:
                t = (t + dt.timedelta(hours=1)).replace(minute=0)
                continue
            if t.minute not in self.minutes:
                t += dt.timedelta(minutes=1)
                continue
            return t
        raise ValueError(f"cron expression {self.expression!r} never matches a real date")


def _parse_field(
    text: str, name: str, lo: int, hi: int, names: dict[str, int], expression: str
) -> set[int]:
    def bad(why: str) -> ValueError:
        return ValueError(f"Invalid {name} field {text!r} in cron expression {expression!r}: {why}")

    def number(token: str) -> int:
        token = token.lower()
        if token in names:
            return names[token]
        if not token.isdigit():
            raise bad(f"expected a number {lo}-{hi}" + (" or a name" if names else ""))
        value = int(token)
        if not lo <= value <= hi:
            raise bad(f"{value} is outside {lo}-{hi}")
        return value

    values: set[int] = set()
    for item in text.split(","):
        step = 1
        if "/" in item:
            item, step_text = item.split("/", 1)
            if not step_text.isdigit() or int(step_text) == 0:
                raise bad("the step after '/' must be a positive number")
            step = int(step_text)
        if item == "*":
            start, end = lo, hi
        elif "-" in item:
            a, b = item.split("-", 1)
            start, end = number(a), number(b)
            if start > end:
                raise bad(f"range {start}-{end} runs backwards")
        else:
            start = number(item)
            end = hi if step > 1 else start
        values.update(range(start, end + 1, step))
    return values
