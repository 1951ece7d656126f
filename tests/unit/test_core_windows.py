"""Tumbling event-time windows aligned to the Unix epoch (contract: "Windows", "Stream time")."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.domain.durations import DurationError, format_duration, parse_duration_ms
from stream_app.domain.events import parse_ts
from stream_app.domain.windows import (
    Window,
    is_closed,
    is_final,
    passes,
    rfc3339,
    window_of,
    window_start,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
MIN_TS = -62_135_596_800_000  # 0001-01-01T00:00:00Z, the earliest ts events accept
MAX_TS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("ts", "size", "start"),
    [
        (0, 5 * MINUTE, 0),
        (5 * MINUTE - 1, 5 * MINUTE, 0),
        (5 * MINUTE, 5 * MINUTE, 5 * MINUTE),
        (-1, 5 * MINUTE, -5 * MINUTE),
        (-5 * MINUTE, 5 * MINUTE, -5 * MINUTE),
        (-5 * MINUTE - 1, 5 * MINUTE, -10 * MINUTE),
        (
            ms(datetime(2026, 11, 22, 10, 17, 42, 123_000, tzinfo=UTC)),
            5 * MINUTE,
            ms(datetime(2026, 11, 22, 10, 15, tzinfo=UTC)),
        ),
        (
            ms(datetime(2026, 11, 22, 10, 17, 42, tzinfo=UTC)),
            HOUR,
            ms(datetime(2026, 11, 22, 10, tzinfo=UTC)),
        ),
        (
            ms(datetime(2026, 11, 22, 23, 59, 59, 999_000, tzinfo=UTC)),
            DAY,
            ms(datetime(2026, 11, 22, tzinfo=UTC)),
        ),
        (
            ms(datetime(1969, 12, 31, 23, 30, tzinfo=UTC)),
            DAY,
            ms(datetime(1969, 12, 31, tzinfo=UTC)),
        ),
    ],
)
def test_window_start(ts: int, size: int, start: int) -> None:
    assert window_start(ts, size) == start
    assert window_of(ts, "w", size) == Window("w", start, start + size)


def test_day_windows_are_utc_days() -> None:
    # 2026-11-22T23:30:00-05:00 is 2026-11-23T04:30:00Z: the UTC day counts, not the local one.
    ts = parse_ts("2026-11-22T23:30:00-05:00")
    assert window_start(ts, DAY) == ms(datetime(2026, 11, 23, tzinfo=UTC))


def test_passes_is_strict() -> None:
    assert not passes(None, 0)
    assert not passes(10, 10)
    assert passes(11, 10)
    assert not passes(9, 10)


def test_is_closed_after_end_plus_grace() -> None:
    end, grace = 5 * MINUTE, MINUTE
    assert not is_closed(end, None, grace)
    assert not is_closed(end, end, grace)
    assert not is_closed(end, end + grace, grace)
    assert is_closed(end, end + grace + 1, grace)
    assert is_closed(end, end + 1, 0)
    assert not is_closed(end, end, 0)


def test_is_final_after_end_plus_attribution_plus_grace() -> None:
    end, grace, attribution = 5 * MINUTE, MINUTE, 7 * DAY
    assert not is_final(end, None, grace, attribution)
    assert not is_final(end, end + grace + 1, grace, attribution)
    assert not is_final(end, end + attribution + grace, grace, attribution)
    assert is_final(end, end + attribution + grace + 1, grace, attribution)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1, "1970-01-01T00:00:00.001Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (ms(datetime(2026, 11, 22, 10, 15, tzinfo=UTC)), "2026-11-22T10:15:00.000Z"),
        (ms(datetime(2000, 2, 29, 23, 59, 59, 999_000, tzinfo=UTC)), "2000-02-29T23:59:59.999Z"),
        (MAX_TS, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_rfc3339(value: int, text: str) -> None:
    assert rfc3339(value) == text


RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=MIN_TS, max_value=MAX_TS))
def test_rfc3339_round_trips_through_parse_ts(value: int) -> None:
    text = rfc3339(value)
    assert RFC3339_MS.match(text), text
    assert parse_ts(text) == value


def test_rfc3339_pads_years_below_1000() -> None:
    # strftime's %Y does not pad years below 1000 on Linux ("500-01-01T...").
    value = ms(datetime(500, 1, 1, tzinfo=UTC))
    assert rfc3339(value) == "0500-01-01T00:00:00.000Z"
    assert rfc3339(MIN_TS) == "0001-01-01T00:00:00.000Z"


sizes = st.one_of(
    st.sampled_from([1, 1_000, MINUTE, 5 * MINUTE, HOUR, DAY, 7 * DAY]),
    st.integers(min_value=1, max_value=30 * DAY),
)


@settings(max_examples=150, deadline=None)
@given(ts=st.integers(min_value=MIN_TS, max_value=MAX_TS), size=sizes)
def test_window_holds_its_ts(ts: int, size: int) -> None:
    start = window_start(ts, size)
    window = window_of(ts, "x", size)
    assert window.start == start
    assert window.end == start + size
    assert start <= ts < start + size
    assert start % size == 0
    # The window is the same for every ts inside it.
    assert window_start(start, size) == start
    assert window_start(start + size - 1, size) == start
    assert window_start(start + size, size) == start + size


@settings(max_examples=100, deadline=None)
@given(
    ts=st.integers(min_value=-(10**15), max_value=10**15),
    size=sizes,
    grace=st.integers(min_value=0, max_value=DAY),
    attribution=st.integers(min_value=0, max_value=7 * DAY),
    stream_time=st.integers(min_value=-(10**15), max_value=10**15),
)
def test_final_implies_closed(
    ts: int, size: int, grace: int, attribution: int, stream_time: int
) -> None:
    end = window_of(ts, "x", size).end
    assert is_closed(end, stream_time, grace) == (stream_time > end + grace)
    assert is_final(end, stream_time, grace, attribution) == (
        stream_time > end + grace + attribution
    )
    if is_final(end, stream_time, grace, attribution):
        assert is_closed(end, stream_time, grace)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0s", 0),
        ("90s", 90_000),
        ("5m", 5 * MINUTE),
        ("1h", HOUR),
        ("1d", DAY),
        ("7d", 7 * DAY),
        ("250ms", 250),
        (" 2h ", 2 * HOUR),
    ],
)
def test_parse_duration(text: str, value: int) -> None:
    assert parse_duration_ms(text) == value


@pytest.mark.parametrize("text", ["", "5", "-5m", "5 minutes", "1.5h", "m", "5M", "5m5s"])
def test_bad_duration(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration_ms(text)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=10**12))
def test_format_duration_inverts_parse(value: int) -> None:
    assert parse_duration_ms(format_duration(value)) == value
