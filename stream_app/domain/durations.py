"""Durations as written in settings ("90s", "5m", "1h", "7d"), held as integer milliseconds."""

from __future__ import annotations

import re

_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")


class DurationError(ValueError):
    """A duration setting that cannot be read."""


def parse_duration_ms(text: str) -> int:
    """Return the duration in milliseconds; "0s" is allowed, negative or unitless is not."""
    match = _DURATION.match(text)
    if match is None:
        raise DurationError(
            f"{text!r} is not a duration: write a whole number and a unit (ms, s, m, h, d), e.g. 5m"
        )
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def format_duration(ms: int) -> str:
    """The shortest exact spelling of a duration, the inverse of parse_duration_ms."""
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_MS[unit]
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
