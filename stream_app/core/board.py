"""The rates board: window counts of every partition summed into the published rates.

Each customer partition sends its current (absolute) counts of the window keys that
changed, with its stream time. The board keeps the latest counts per partition, so a
partition that sends the same counts again after a restart changes nothing. Stream time
here is the largest of the partitions' stream times. A window's records are published when
it closes, again for each key a later conversion changes, and a last time with `final`
once no on-time purchase can change it; then the window is forgotten.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stream_app.core.cohorts import CohortCounts, Pair, WindowKey
from stream_app.core.events import MICROS_PER_UNIT
from stream_app.core.partition import META_KEY, Partial, WindowConfig
from stream_app.core.rates import ALL, ratio, rollup_keys, with_rollups
from stream_app.core.windows import is_closed, is_final, rfc3339, window_start

_WINDOW = "w|"


@dataclass(slots=True)
class _BoardWindow:
    by_partition: dict[Pair, dict[int, CohortCounts]] = field(default_factory=dict)
    announced: bool = False
    changed: set[Pair] = field(default_factory=set)

    def summed(self) -> dict[Pair, CohortCounts]:
        totals: dict[Pair, CohortCounts] = {}
        for pair, parts in self.by_partition.items():
            total = totals[pair] = CohortCounts()
            for counts in parts.values():
                total.add(counts)
        return totals


@dataclass(frozen=True, slots=True)
class RateRecord:
    label: str
    start: int
    end: int
    channel: str
    segment: str
    counts: CohortCounts
    final: bool

    @property
    def key(self) -> str:
        return f"{self.label}|{rfc3339(self.start)}|{self.channel}|{self.segment}"

    def as_json(self, emitted_at_ms: int) -> dict[str, Any]:
        return {
            "window": self.label,
            "window_start": rfc3339(self.start),
            "window_end": rfc3339(self.end),
            "channel": self.channel,
            "segment": self.segment,
            "offers": self.counts.offers,
            "conversions": self.counts.conversions,
            "rate": ratio(self.counts.conversions, self.counts.offers),
            "revenue": self.counts.revenue_micros / MICROS_PER_UNIT,
            "final": self.final,
            "emitted_at": rfc3339(emitted_at_ms),
        }


def encode_partials(partition: int, stream_time: int | None, partials: Iterable[Partial]) -> bytes:
    rows = [[p.label, p.start, p.channel, p.segment, *p.counts.as_row()] for p in partials]
    return json.dumps([partition, stream_time, rows], separators=(",", ":")).encode()


def decode_partials(raw: bytes) -> tuple[int, int | None, list[Partial]]:
    partition, stream_time, rows = json.loads(raw)
    partials = [
        Partial(label, start, channel, segment, CohortCounts(offers, conversions, revenue))
        for label, start, channel, segment, offers, conversions, revenue in rows
    ]
    return partition, stream_time, partials


class RatesBoard:
    def __init__(self, config: WindowConfig) -> None:
        self.config = config
        self.next_offset = 0
        self._stream_times: dict[int, int] = {}
        self._windows: dict[WindowKey, _BoardWindow] = {}
        self._changed_windows: set[WindowKey] = set()

    @property
    def stream_time(self) -> int | None:
        return max(self._stream_times.values(), default=None)

    def apply(
        self, partition: int, stream_time: int | None, partials: list[Partial], offset: int
    ) -> None:
        if offset < self.next_offset:
            return
        self.next_offset = offset + 1
        if stream_time is not None and stream_time > self._stream_times.get(partition, -(2**62)):
            self._stream_times[partition] = stream_time
        for partial in partials:
            key = (partial.label, partial.start)
            if self._is_final(key):
                continue
            window = self._windows.setdefault(key, _BoardWindow())
            pair = (partial.channel, partial.segment)
            window.by_partition.setdefault(pair, {})[partition] = partial.counts
            window.changed.add(pair)
            self._changed_windows.add(key)

    def current(self, label: str) -> dict[Pair, CohortCounts]:
        """Counts with roll-ups of the window of this size that holds stream time."""
        stream_time = self.stream_time
        if stream_time is None:
            return {}
        window = self._windows.get((label, window_start(stream_time, self.config.size_ms(label))))
        return {} if window is None else with_rollups(window.summed())

    def take_records(self) -> list[RateRecord]:
        """Records due since the last call: closes, changes after close, and finals."""
        records: list[RateRecord] = []
        for key in sorted(self._windows):
            window = self._windows[key]
            size = self.config.size_ms(key[0])
            end = key[1] + size
            if not is_closed(end, self.stream_time, self.config.grace_ms):
                continue
            final = self._is_final(key)
            summed = with_rollups(window.summed())
            if final or not window.announced:
                due = set(summed)
            else:
                due = {rolled for pair in window.changed for rolled in rollup_keys(pair)}
            if not due:
                continue
            window.announced = True
            window.changed.clear()
            self._changed_windows.add(key)
            records.extend(
                RateRecord(key[0], key[1], end, pair[0], pair[1], summed[pair], final)
                for pair in sorted(due)
            )
            if final:
                del self._windows[key]
        return records

    def _is_final(self, key: WindowKey) -> bool:
        end = key[1] + self.config.size_ms(key[0])
        return is_final(end, self.stream_time, self.config.grace_ms, self.config.attribution_ms)

    # -- persistence -----------------------------------------------------------------
    def take_changes(self) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        for key in self._changed_windows:
            window = self._windows.get(key)
            changes[f"{_WINDOW}{key[0]}|{key[1]}"] = (
                None
                if window is None
                else [
                    window.announced,
                    [
                        [pair[0], pair[1], partition, *counts.as_row()]
                        for pair, parts in window.by_partition.items()
                        for partition, counts in parts.items()
                    ],
                    [list(pair) for pair in window.changed],
                ]
            )
        self._changed_windows.clear()
        changes[META_KEY] = [self.next_offset, list(self._stream_times.items())]
        return changes

    @classmethod
    def restore(cls, config: WindowConfig, entries: dict[str, Any]) -> RatesBoard:
        board = cls(config)
        meta = entries.get(META_KEY)
        if meta is not None:
            board.next_offset = meta[0]
            board._stream_times = {int(p): t for p, t in meta[1]}
        for key, value in entries.items():
            if value is None or not key.startswith(_WINDOW):
                continue
            label, start = key[len(_WINDOW) :].rsplit("|", 1)
            announced, rows, changed = value
            window = _BoardWindow(announced=announced, changed={(a, b) for a, b in changed})
            for channel, segment, partition, offers, conversions, revenue in rows:
                window.by_partition.setdefault((channel, segment), {})[partition] = CohortCounts(
                    offers, conversions, revenue
                )
            board._windows[(label, int(start))] = window
        return board


__all__ = ["ALL", "RateRecord", "RatesBoard", "decode_partials", "encode_partials"]
