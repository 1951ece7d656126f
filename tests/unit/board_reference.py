"""The rates board as it was written in Python, kept as the compiled board's oracle.

Test-only: stream_app's RatesBoard runs on the compiled core (engine/src/board.rs); this
model is the Python implementation it replaced, unchanged but for its name, so that
tests can hold the two to the same records, reads and store entries, and restore each
from the other's changelog.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from stream_app.domain.board import WindowRecord
from stream_app.domain.cohorts import Partial, ViewWindowKey, WindowKey
from stream_app.domain.fastjson import dumps_key, loads
from stream_app.domain.store_keys import META_KEY, WINDOW_PREFIX
from stream_app.domain.views import VIEW_BY_NAME, Key, View
from stream_app.domain.window_config import WindowConfig
from stream_app.domain.windows import is_closed, window_start


@dataclass(slots=True)
class _BoardWindow:
    by_partition: dict[Key, dict[int, list[int]]] = field(default_factory=dict)
    announced: bool = False
    changed: set[Key] = field(default_factory=set)

    def summed(self, key: Key) -> list[int]:
        return list(map(sum, zip(*self.by_partition[key].values(), strict=True)))


class ReferenceBoard:
    def __init__(self, config: WindowConfig, partitions: int) -> None:
        self.config = config
        self.partitions = partitions
        self.next_offset = 0
        self._stream_times: dict[int, int] = {}
        self._windows: dict[ViewWindowKey, _BoardWindow] = {}
        self._changed_windows: set[ViewWindowKey] = set()

    @property
    def stream_time(self) -> int | None:
        return max(self._stream_times.values(), default=None)

    @property
    def low_watermark(self) -> int | None:
        """The stream time every partition has reached (None until all have reported)."""
        if len(self._stream_times) < self.partitions:
            return None
        return min(self._stream_times.values())

    def apply(
        self, partition: int, stream_time: int | None, partials: list[Partial], offset: int
    ) -> None:
        self._apply_rows(
            partition,
            stream_time,
            [[p.view, p.label, p.start, *p.key, *p.vector] for p in partials],
            offset,
        )

    def apply_encoded(self, raw: bytes, offset: int) -> None:
        """`apply` of a message as encode_partials wrote it, without a Partial per row."""
        partition, stream_time, rows = loads(raw)
        self._apply_rows(partition, stream_time, rows, offset)

    def _apply_rows(
        self, partition: int, stream_time: int | None, rows: list[list[Any]], offset: int
    ) -> None:
        """Rows as encode_partials writes them: [view, label, start, key..., vector...]."""
        if offset < self.next_offset:
            return
        self.next_offset = offset + 1
        # The message's stream time is its partition's after these partials: they belong
        # to windows that were open before it, so finality is judged without it (or a
        # partition's last counts for a window would be dropped by its own message).
        low_watermark = self.low_watermark
        if stream_time is not None and stream_time > self._stream_times.get(partition, -(2**62)):
            self._stream_times[partition] = stream_time
        windows = self._windows
        changed_windows = self._changed_windows
        is_final = self.config.is_final
        # Per window of this message: None when final (its partials are dropped). A
        # message's rows come window by window, so the last window is kept at hand.
        seen: dict[ViewWindowKey, _BoardWindow | None] = {}
        slot: ViewWindowKey | None = None
        window: _BoardWindow | None = None
        for row in rows:
            view, label, start = row[0], row[1], row[2]
            if slot is None or slot[2] != start or slot[1] != label or slot[0] != view:
                slot = (view, label, start)
                if slot in seen:
                    window = seen[slot]
                elif is_final((label, start), low_watermark):
                    window = seen[slot] = None
                else:
                    window = windows.get(slot)
                    if window is None:
                        window = windows[slot] = _BoardWindow()
                    seen[slot] = window
            if window is None:
                continue
            key = (row[3], row[4])
            vector = row[5:]
            held = window.by_partition.get(key)
            if held is None:
                held = window.by_partition[key] = {}
            elif held.get(partition) == vector:
                continue  # sent again after a restart: nothing changed, nothing to publish
            held[partition] = vector
            window.changed.add(key)
            changed_windows.add(slot)

    def current(self, view: View, label: str) -> dict[Key, list[int]]:
        """Summed vectors of the window of this size that holds stream time."""
        stream_time = self.stream_time
        if stream_time is None:
            return {}
        start = window_start(stream_time, self.config.size_ms(label))
        return self.window(view, (label, start))

    def window(self, view: View, window_key: WindowKey) -> dict[Key, list[int]]:
        window = self._windows.get((view.name, *window_key))
        if window is None:
            return {}
        return {key: window.summed(key) for key in window.by_partition}

    def retained(self, view: View, label: str) -> list[int]:
        """Starts of the windows of this view and size still kept, oldest first."""
        return sorted(
            start for name, lab, start in self._windows if name == view.name and lab == label
        )

    def take_records(self) -> list[WindowRecord]:
        """Records due since the last call: closes, changes after close, and finals."""
        records: list[WindowRecord] = []
        for slot in sorted(self._windows):
            view_name, label, start = slot
            window = self._windows[slot]
            end = start + self.config.size_ms(label)
            if not is_closed(end, self.low_watermark, self.config.grace_ms):
                continue
            final = self.config.is_final((label, start), self.low_watermark)
            due = set(window.by_partition) if final or not window.announced else window.changed
            if not due:
                continue
            window.announced = True
            window.changed = set()
            self._changed_windows.add(slot)
            view = VIEW_BY_NAME[view_name]
            records.extend(
                WindowRecord(view, label, start, end, key, window.summed(key), final)
                for key in sorted(due)
            )
            if final:
                del self._windows[slot]
        return records

    # -- persistence -----------------------------------------------------------------
    def take_changes(self) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        for slot in self._changed_windows:
            window = self._windows.get(slot)
            entry = WINDOW_PREFIX + dumps_key(slot)
            changes[entry] = (
                None
                if window is None
                else [
                    window.announced,
                    [
                        [*key, partition, vector]
                        for key, parts in window.by_partition.items()
                        for partition, vector in parts.items()
                    ],
                    [list(key) for key in window.changed],
                ]
            )
        self._changed_windows.clear()
        changes[META_KEY] = [self.next_offset, list(self._stream_times.items())]
        return changes

    @classmethod
    def restore(
        cls, config: WindowConfig, partitions: int, entries: dict[str, Any]
    ) -> ReferenceBoard:
        board = cls(config, partitions)
        meta = entries.get(META_KEY)
        if meta is not None:
            board.next_offset = meta[0]
            board._stream_times = {int(p): t for p, t in meta[1]}
        for entry, value in entries.items():
            if value is None or not entry.startswith(WINDOW_PREFIX):
                continue
            view_name, label, start = json.loads(entry[len(WINDOW_PREFIX) :])
            announced, rows, changed = value
            window = _BoardWindow(announced=announced, changed={(a, b) for a, b in changed})
            for first, second, partition, vector in rows:
                window.by_partition.setdefault((first, second), {})[partition] = vector
            board._windows[(view_name, label, start)] = window
        return board
