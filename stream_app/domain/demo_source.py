"""What a worker is watching when it runs in the demo: simulated data, how fast its event
time runs against the wall clock, and which rate drop is injected, when.

The demo writes this description as JSON next to its logs; the worker reads it back
(UPSELL_DEMO_INFO) and serves it in /api/rates as `source`, so the page can say what the
viewer is looking at. One format for the file and the API; parsing is strict, and a bad
document gives one line saying what is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from stream_app.domain.events import InvalidEvent, parse_ts
from stream_app.domain.windows import rfc3339

FORMAT = 1


class SourceError(ValueError):
    """A demo description that cannot be read; the message is one line."""


@dataclass(frozen=True)
class RateChange:
    """One segment of the dropped channel: its true conversion rate before and during."""

    segment: str
    from_rate: float
    to_rate: float


@dataclass(frozen=True)
class InjectedDrop:
    channel: str
    factor: float
    changes: tuple[RateChange, ...]
    from_event_ms: int
    until_event_ms: int
    # Wall-clock seconds after the demo's start.
    from_wall_s: float
    until_wall_s: float


@dataclass(frozen=True)
class DemoSource:
    started_at_ms: int  # wall clock, when the simulator began
    event_start_ms: int  # event time of its first offer
    speed: float  # event-time seconds per wall-clock second
    drop: InjectedDrop | None

    def as_json(self) -> dict[str, Any]:
        drop = self.drop
        return {
            "format": FORMAT,
            "kind": "simulated",
            "started_at": rfc3339(self.started_at_ms),
            "event_start": rfc3339(self.event_start_ms),
            "speed": self.speed,
            "drop": None
            if drop is None
            else {
                "channel": drop.channel,
                "factor": drop.factor,
                "segments": [
                    {"segment": c.segment, "from_rate": c.from_rate, "to_rate": c.to_rate}
                    for c in drop.changes
                ],
                "from": rfc3339(drop.from_event_ms),
                "until": rfc3339(drop.until_event_ms),
                "from_wall_s": drop.from_wall_s,
                "until_wall_s": drop.until_wall_s,
            },
        }

    @classmethod
    def from_json(cls, document: object) -> DemoSource:
        top = _object(document, "the description")
        if top.get("format") != FORMAT:
            raise SourceError(
                f"format {top.get('format')!r} is not {FORMAT} "
                "(written by another version of the demo)"
            )
        raw_drop = top.get("drop")
        drop = None
        if raw_drop is not None:
            fields = _object(raw_drop, "drop")
            changes = tuple(
                RateChange(_text(c, "segment"), _number(c, "from_rate"), _number(c, "to_rate"))
                for c in (_object(item, "drop segment") for item in _list(fields, "segments"))
            )
            drop = InjectedDrop(
                channel=_text(fields, "channel"),
                factor=_number(fields, "factor"),
                changes=changes,
                from_event_ms=_time(fields, "from"),
                until_event_ms=_time(fields, "until"),
                from_wall_s=_number(fields, "from_wall_s"),
                until_wall_s=_number(fields, "until_wall_s"),
            )
        return cls(
            started_at_ms=_time(top, "started_at"),
            event_start_ms=_time(top, "event_start"),
            speed=_number(top, "speed"),
            drop=drop,
        )


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SourceError(f"{what} is not a JSON object")
    return value


def _list(fields: dict[str, Any], name: str) -> list[Any]:
    value = fields.get(name)
    if not isinstance(value, list):
        raise SourceError(f"{name} is not a list")
    return value


def _text(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value:
        raise SourceError(f"{name} is not a non-empty string")
    return value


def _number(fields: dict[str, Any], name: str) -> float:
    value = fields.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SourceError(f"{name} is not a number")
    return float(value)


def _time(fields: dict[str, Any], name: str) -> int:
    value = fields.get(name)
    if not isinstance(value, str):
        raise SourceError(f"{name} is not an RFC 3339 time")
    try:
        return parse_ts(value)
    except InvalidEvent:
        raise SourceError(f"{name} {value[:40]!r} is not an RFC 3339 time") from None
