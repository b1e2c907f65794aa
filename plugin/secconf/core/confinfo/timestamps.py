"""``xs:dateTime`` values of conference-info documents, as POSIX seconds, without a clock.

RFC 4575 §5.7.2/§5.7.5/§5.7.7: ``<when>`` is an XML Schema ``dateTime`` that
SHOULD be in UTC.  The model keeps an instant as an ``int``: whole seconds since
1970-01-01T00:00:00Z (POSIX time, leap seconds not counted), passed in by the
caller; the core reads no clock and imports no ``datetime``
(``tests/unit/test_core_is_sans_io.py``), so the calendar arithmetic is done here
with the proleptic Gregorian day count of XML Schema Part 2 §3.2.7 / ISO 8601.

Written: always ``YYYY-MM-DDThh:mm:ssZ`` (UTC, no fraction).  Read: the whole
lexical space of XML Schema 1.0 ``dateTime`` for years 0001..9999: a fraction
of a second is dropped (rounded towards the past), an offset is applied to give
UTC, and a value without a time zone is taken as UTC (the RFC's SHOULD; our
focus always writes ``Z``).
"""

from __future__ import annotations

import calendar
import re
from typing import Final

from ..errors import MalformedConferenceInfo

__all__ = ["MAX_SECONDS", "MIN_SECONDS", "format_datetime", "parse_datetime"]

_DAY: Final = 86_400
#: Days from 0000-03-01 (the start of the 400-year cycle the count uses) to 1970-01-01.
_EPOCH_SHIFT: Final = 719_468
_DAYS_PER_ERA: Final = 146_097  # 400 Gregorian years

_DATETIME_RE: Final = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"T(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:\.[0-9]+)?"
    r"(?P<zone>Z|[+-][0-9]{2}:[0-9]{2})?"
)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (March-based year, as ISO 8601)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * _DAYS_PER_ERA + day_of_era - _EPOCH_SHIFT


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """The (year, month, day) of a day count since 1970-01-01: the inverse of the above."""
    days += _EPOCH_SHIFT
    era = days // _DAYS_PER_ERA
    day_of_era = days - era * _DAYS_PER_ERA
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + (3 if shifted_month < 10 else -9)
    return year_of_era + era * 400 + (month <= 2), month, day


#: The instants a document can carry: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
MIN_SECONDS: Final = _days_from_civil(1, 1, 1) * _DAY
MAX_SECONDS: Final = _days_from_civil(9999, 12, 31) * _DAY + _DAY - 1


def format_datetime(seconds: int) -> str:
    """POSIX seconds as ``YYYY-MM-DDThh:mm:ssZ``; refuses instants outside years 1..9999."""
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise MalformedConferenceInfo("a timestamp must be whole POSIX seconds (int)")
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise MalformedConferenceInfo("timestamp outside the years 0001..9999")
    days, second_of_day = divmod(seconds, _DAY)
    year, month, day = _civil_from_days(days)
    hour, rest = divmod(second_of_day, 3600)
    minute, second = divmod(rest, 60)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z"


def parse_datetime(text: str) -> int:
    """An ``xs:dateTime`` (whitespace collapsed, as the schema type does) as POSIX seconds."""
    match = _DATETIME_RE.fullmatch(text.strip())
    if match is None:
        raise MalformedConferenceInfo("<when> is not an xs:dateTime")
    year, month, day = (int(match[name]) for name in ("year", "month", "day"))
    hour, minute, second = (int(match[name]) for name in ("hour", "minute", "second"))
    if year == 0 or not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        raise MalformedConferenceInfo("<when> names a date that does not exist")
    # XML Schema 1.0 §3.2.7: 24:00:00 is the first instant of the next day; nothing else past 23.
    if minute > 59 or second > 59 or (hour > 23 and (hour, minute, second) != (24, 0, 0)):
        raise MalformedConferenceInfo("<when> names a time that does not exist")
    offset = 0
    zone = match["zone"]
    if zone and zone != "Z":
        zone_hours, zone_minutes = int(zone[1:3]), int(zone[4:6])
        if zone_minutes > 59 or zone_hours * 60 + zone_minutes > 14 * 60:
            raise MalformedConferenceInfo("<when> has a time zone offset beyond +-14:00")
        offset = (zone_hours * 60 + zone_minutes) * 60 * (-1 if zone[0] == "-" else 1)
    seconds = _days_from_civil(year, month, day) * _DAY + hour * 3600 + minute * 60 + second
    seconds -= offset
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise MalformedConferenceInfo("timestamp outside the years 0001..9999")
    return seconds
