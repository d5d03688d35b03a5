"""Five-field cron expressions: ``minute hour day-of-month month day-of-week``.

Each field takes ``*``, numbers, ranges ``a-b``, steps ``*/n``, ``a-b/n`` and ``a/n``,
and comma lists; months and weekdays also take names (``jan``, ``mon``).  Weekday 0
and 7 are Sunday.  Only ASCII digits count as numbers.

The fields are checked here (errors name the field); the next run is computed by
``cronsim``, which follows Debian (Vixie) cron:

* day of month and day of week: if either field starts with ``*`` (``*``, ``*/2``)
  a day must match both, otherwise either (``0 0 13 * fri``: every 13th and every
  Friday; ``0 0 */2 * 1``: Mondays that fall on an odd day of the month);
* daylight saving time, in the schedule's time zone (``tz=``, default local time):
  a job at a fixed time runs once a day at that wall-clock time, whatever the UTC
  offset; a time skipped when clocks go forward runs at the first minute after
  the gap (``30 2 * * *`` runs at 03:00 on that day); a time repeated when clocks
  go back runs once, at its first occurrence.  Jobs with ``*`` in the minute or
  hour field run on every matching minute that exists.
"""

from __future__ import annotations

import datetime as dt
import os

__all__ = ["CronExpression", "local_zone", "resolve_zone"]

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
_CHECK_FROM = dt.datetime(2000, 1, 1)


def local_zone() -> dt.tzinfo:
    """The local time zone with its DST rules: ``TZ`` if it names a zone, else
    ``/etc/localtime``; a fixed offset (no DST) only when neither can be read."""
    import zoneinfo  # not at `import cytask`: it costs milliseconds

    key = os.environ.get("TZ", "").lstrip(":")
    if key:
        try:
            if os.path.isabs(key):
                with open(key, "rb") as f:
                    return zoneinfo.ZoneInfo.from_file(f, key=key)
            return zoneinfo.ZoneInfo(key)
        except (OSError, ValueError, zoneinfo.ZoneInfoNotFoundError):
            pass
    try:
        with open("/etc/localtime", "rb") as f:
            return zoneinfo.ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        pass
    fixed = dt.datetime.now().astimezone().tzinfo
    assert fixed is not None
    return fixed


def resolve_zone(tz: object, name: str = "tz") -> dt.tzinfo:
    """None -> the local zone; a zone name (``"Europe/Paris"``) or a tzinfo -> itself."""
    if tz is None:
        return local_zone()
    if isinstance(tz, dt.tzinfo):
        return tz
    if isinstance(tz, str):
        import zoneinfo

        try:
            return zoneinfo.ZoneInfo(tz)
        except (ValueError, zoneinfo.ZoneInfoNotFoundError):
            raise ValueError(
                f"Expected an IANA time zone name for {name} (e.g. 'America/New_York'), got {tz!r}"
            ) from None
    raise TypeError(
        f"Expected str, datetime.tzinfo or None for {name}, got {type(tz).__name__}: {tz!r}"
    )


class CronExpression:
    """A parsed cron expression in a time zone.

    ``next_after(t)`` is the first matching minute strictly after the datetime `t`
    (in `t`'s own tzinfo; naive stays naive); ``next_timestamp(ts)`` is the same for
    an absolute time (``time.time()``) in the expression's zone.
    """

    def __init__(self, expression: str, tz: object = None) -> None:
        if not isinstance(expression, str):
            raise TypeError(f"Expected str for cron expression, got {type(expression).__name__}")
        parts = expression.split()
        if len(parts) != 5:
            raise ValueError(
                f"Expected 5 fields (minute hour day-of-month month day-of-week) in cron "
                f"expression, got {len(parts)}: {expression!r}"
            )
        for text, (name, lo, hi, names) in zip(parts, _FIELDS, strict=True):
            _parse_field(text, name, lo, hi, names, expression)
        from cronsim import CronSim, CronSimError  # on first use, not at `import cytask`

        self.expression = expression
        self.tz = resolve_zone(tz)
        self._cron = " ".join(parts)
        try:
            CronSim(self._cron, _CHECK_FROM)
        except CronSimError as exc:
            raise ValueError(
                f"cron expression {expression!r} never matches a real date ({exc})"
            ) from None

    def __repr__(self) -> str:
        return f"CronExpression({self.expression!r}, tz={self.tz!r})"

    def next_after(self, after: dt.datetime) -> dt.datetime:
        """The first matching minute strictly after `after` (same tzinfo)."""
        from cronsim import CronSim

        try:
            return next(CronSim(self._cron, after))
        except StopIteration:
            raise ValueError(
                f"cron expression {self.expression!r} never matches a real date"
            ) from None

    def next_timestamp(self, now: float) -> float:
        """The first matching minute after the POSIX time `now`, as a POSIX time."""
        return self.next_after(dt.datetime.fromtimestamp(now, self.tz)).timestamp()


def _parse_field(
    text: str, name: str, lo: int, hi: int, names: dict[str, int], expression: str
) -> set[int]:
    def bad(why: str) -> ValueError:
        return ValueError(f"Invalid {name} field {text!r} in cron expression {expression!r}: {why}")

    def number(token: str) -> int:
        token = token.lower()
        if token in names:
            return names[token]
        if not (token.isascii() and token.isdigit()):  # int() also reads '\u0663' as 3
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
            if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
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
