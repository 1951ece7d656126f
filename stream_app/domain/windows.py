"""Tumbling event-time windows aligned to the Unix epoch, and when they close.

All times are integer epoch milliseconds. A window [start, end) holds the timestamps
start <= ts < end; it closes when stream time passes end + grace and its counts are final
when stream time passes end + attribution window + grace (no on-time purchase can still
convert one of its offers after that).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Final

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# The timestamps datetime can hold, years 1 to 9999, in epoch milliseconds.
FIRST_TS_MS: Final = -62_135_596_800_000  # 0001-01-01T00:00:00.000Z
LAST_TS_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


@dataclass(frozen=True, slots=True)
class Window:
    """One window of one size: `label` is the configured size string ("5m")."""

    label: str
    start: int
    end: int


def window_start(ts: int, size_ms: int) -> int:
    """The start of the size_ms window that holds ts (floor, so pre-1970 times work too)."""
    return ts - ts % size_ms


def window_of(ts: int, label: str, size_ms: int) -> Window:
    start = window_start(ts, size_ms)
    return Window(label, start, start + size_ms)


def passes(stream_time: int | None, moment: int) -> bool:
    """Stream time "passes" a moment when it is strictly greater."""
    return stream_time is not None and stream_time > moment


def is_closed(window_end: int, stream_time: int | None, grace_ms: int) -> bool:
    return passes(stream_time, window_end + grace_ms)


def is_final(window_end: int, stream_time: int | None, grace_ms: int, attribution_ms: int) -> bool:
    return passes(stream_time, window_end + attribution_ms + grace_ms)


_MS_PER_DAY = 86_400_000


# Window bounds come back in record after record, and a batch's records share their
# emitted_at: formatting each again was a few percent of the publishing stage.
@lru_cache(maxsize=4096)
def rfc3339(ms: int) -> str:
    """UTC timestamp with milliseconds, "2026-11-22T10:15:00.000Z".

    Total: a window of an event in year 9999 ends in year 10000, and one near year 1 may
    start before it, beyond what datetime holds; those are written with ISO 8601's
    expanded year ("+10000-01-01T00:00:00.000Z") instead of crashing the publisher.
    """
    days, rest = divmod(ms, _MS_PER_DAY)
    if FIRST_TS_MS <= ms <= LAST_TS_MS:
        # strftime's %Y does not pad years below 1000 on every platform.
        moment = EPOCH + timedelta(days=days)
        year, month, day = moment.year, moment.month, moment.day
    else:
        year, month, day = civil_from_days(days)
    seconds, milli = divmod(rest, 1000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    written = f"+{year}" if year > 9999 else (f"{year:04d}" if year >= 0 else f"-{-year:04d}")
    return f"{written}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{milli:03d}Z"


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of the proleptic Gregorian calendar, `days` after 1970-01-01.

    Howard Hinnant's algorithm: exact for any integer, year 0 being 1 BC.
    """
    shifted = days + 719_468
    era = shifted // 146_097
    day_of_era = shifted - era * 146_097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_index + 2) // 5 + 1
    month = month_index + 3 if month_index < 10 else month_index - 9
    year = year_of_era + era * 400 + (1 if month <= 2 else 0)
    return year, month, day
