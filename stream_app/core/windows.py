"""Tumbling event-time windows aligned to the Unix epoch, and when they close.

All times are integer epoch milliseconds. A window [start, end) holds the timestamps
start <= ts < end; it closes when stream time passes end + grace and its counts are final
when stream time passes end + attribution window + grace (no on-time purchase can still
convert one of its offers after that).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


def rfc3339(ms: int) -> str:
    """UTC timestamp with milliseconds, "2026-11-22T10:15:00.000Z"."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
