"""The rates board: the window vectors of every partition summed into published records.

Each customer partition sends its current (absolute) vectors of the keys that changed,
with its stream time. The board keeps the latest vector per partition, so a partition
that sends the same vectors again after a restart changes nothing.

Stream time here is the largest of the partitions' stream times: it picks the current
window of the gauges. Closing and finality go by the smallest (a low watermark, as in
Kafka Streams or Flink): a partition behind the others may still send counts for a
window the leading partition has long passed. A window's records are published when it
closes, again for each key a later event changes, and a last time with `final` once no
on-time purchase can change it; then the window is forgotten.

The state and these rules are compiled (engine/src/board.rs, docs/engine.md); its store
entries (`w|<view, label, start>` per window, the meta entry) are the ones this module's
Python board wrote, so a changelog written by either restores in the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stream_app import _engine
from stream_app.domain.bands import Bands
from stream_app.domain.cohorts import Partial, WindowKey
from stream_app.domain.fastjson import dumps, loads
from stream_app.domain.immutable import immutable
from stream_app.domain.rates import figures
from stream_app.domain.topic_keys import topic_key
from stream_app.domain.views import CHANNEL_SEGMENT, VIEW_BY_NAME, Key, View
from stream_app.domain.window_config import WindowConfig
from stream_app.domain.windows import rfc3339


@immutable
class WindowRecord:
    view: View
    label: str
    start: int
    end: int
    key: Key
    vector: list[int]
    final: bool

    @property
    def topic_key(self) -> str:
        """Rates topic: `<window>|<start>|<channel>|<segment>`; KPI topic: view first
        (values encoded by topic_keys.py)."""
        values = (self.label, rfc3339(self.start), *self.key)
        return (
            topic_key(*values)
            if self.view is CHANNEL_SEGMENT
            else topic_key(self.view.name, *values)
        )

    def as_json(self, bands: Bands, emitted_at_ms: int) -> dict[str, Any]:
        first, second = self.view.dimensions
        document: dict[str, Any] = {} if self.view is CHANNEL_SEGMENT else {"view": self.view.name}
        document.update(
            {
                "window": self.label,
                "window_start": rfc3339(self.start),
                "window_end": rfc3339(self.end),
                first: self.key[0],
                second: self.key[1],
            }
        )
        document.update(figures(self.view, self.key, self.vector, bands))
        document["final"] = self.final
        document["emitted_at"] = rfc3339(emitted_at_ms)
        return document


def encode_partials(partition: int, stream_time: int | None, partials: Iterable[Partial]) -> bytes:
    rows = [[p.view, p.label, p.start, *p.key, *p.vector] for p in partials]
    return dumps([partition, stream_time, rows])


def decode_partials(raw: bytes) -> tuple[int, int | None, list[Partial]]:
    partition, stream_time, rows = loads(raw)
    partials = [Partial(row[0], row[1], row[2], (row[3], row[4]), row[5:]) for row in rows]
    return partition, stream_time, partials


class RatesBoard:
    """The board's state and rules are compiled (engine/src/board.rs); this face keeps the
    window config and builds the records."""

    def __init__(self, config: WindowConfig, partitions: int) -> None:
        self.config = config
        self.partitions = partitions
        self._core = _engine.RatesBoard(
            list(config.sizes), config.grace_ms, config.attribution_ms, partitions
        )

    @property
    def next_offset(self) -> int:
        return self._core.next_offset

    @property
    def stream_time(self) -> int | None:
        return self._core.stream_time

    @property
    def low_watermark(self) -> int | None:
        """The stream time every partition has reached (None until all have reported)."""
        return self._core.low_watermark

    def apply(
        self, partition: int, stream_time: int | None, partials: list[Partial], offset: int
    ) -> None:
        self.apply_encoded(encode_partials(partition, stream_time, partials), offset)

    def apply_encoded(self, raw: bytes, offset: int) -> None:
        """A partials message as encode_partials wrote it."""
        self._core.apply_encoded(raw, offset)

    def current(self, view: View, label: str) -> dict[Key, list[int]]:
        """Summed vectors of the window of this size that holds stream time."""
        return self._core.current(view.name, label)

    def window(self, view: View, window_key: WindowKey) -> dict[Key, list[int]]:
        return self._core.window(view.name, *window_key)

    def retained(self, view: View, label: str) -> list[int]:
        """Starts of the windows of this view and size still kept, oldest first."""
        return self._core.retained(view.name, label)

    def take_records(self) -> list[WindowRecord]:
        """Records due since the last call: closes, changes after close, and finals."""
        return [
            WindowRecord(VIEW_BY_NAME[view_name], label, start, end, (first, second), vector, final)
            for view_name, label, start, end, first, second, vector, final in (
                self._core.take_records()
            )
        ]

    def take_published(self, bands: Bands, emitted_at_ms: int) -> list[tuple[View, bytes, bytes]]:
        """`take_records` as (view, topic key, JSON value): `WindowRecord.topic_key` and
        `dumps(as_json(...))`'s bytes, built in the compiled core but for a record whose
        figures are beyond 2^53 (engine/src/records.rs), built here."""
        published = []
        for item in self._core.take_published(
            (list(bands.campaign.names), list(bands.campaign.bounds)),
            (list(bands.loyalty.names), list(bands.loyalty.bounds)),
            emitted_at_ms,
        ):
            if len(item) == 3:
                view_name, key, value = item
                published.append((VIEW_BY_NAME[view_name], key, value))
            else:
                view_name, label, start, end, first, second, vector, final = item
                record = WindowRecord(
                    VIEW_BY_NAME[view_name], label, start, end, (first, second), vector, final
                )
                value = dumps(record.as_json(bands, emitted_at_ms))
                published.append((record.view, record.topic_key.encode(), value))
        return published

    # -- persistence -----------------------------------------------------------------
    def take_changes(self) -> dict[str, Any]:
        """The store entries changed since the last call (None deletes), decoded."""
        return self._core.take_changes()

    def take_packed_changes(self) -> list[tuple[str, bytes | None]]:
        """`take_changes` as the store's records, encoded in the compiled core."""
        return self._core.take_packed_changes()

    @classmethod
    def restore(cls, config: WindowConfig, partitions: int, entries: dict[str, Any]) -> RatesBoard:
        board = cls(config, partitions)
        board._core.restore(entries)
        return board
