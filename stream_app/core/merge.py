"""Input partitions merged in event-time order across fetches, as Kafka Streams does.

A worker reads its input partitions a fetch at a time, and a fetch rarely holds every
partition: after a restart with a backlog, the records of one partition can come minutes
of event time ahead of another's. Forwarded as they come, the ones ahead would push
stream time past the others' windows and make them late, and a last-touch purchase could
be decided before its offer arrived. So records wait here until every partition that is
still behind (has records in Kafka not read yet) has shown how far it has got: a record
leaves once no partition behind can still deliver an older one. A partition that has
caught up does not hold the others back (what it gets next is a live arrival).

Each partition's records leave in offset order (its order key is the running largest ts,
a reject taking the key of the record before it), so the receiving stage can count each
source item once by its offset. If a partition behind delivers nothing for `max_wait_s`,
or more than `max_buffered` records wait, everything waiting leaves: a stalled partition
must not stall the stream, and memory stays bounded.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
Source = tuple[str, int]  # (topic, partition)

_LOWEST = -(2**63)


@dataclass(slots=True)
class _Waiting(Generic[T]):
    items: deque[tuple[int, int, T]] = field(default_factory=deque)  # (key, offset, payload)
    key: int = _LOWEST
    next_offset: int | None = None


class EventTimeMerge(Generic[T]):
    def __init__(self, max_buffered: int, max_wait_s: float) -> None:
        self.max_buffered = max_buffered
        self.max_wait_s = max_wait_s
        self._sources: dict[Source, _Waiting[T]] = {}
        self._waiting = 0
        self._stalled_since: float | None = None

    def __len__(self) -> int:
        return self._waiting

    def add(self, source: Source, offset: int, ts: int | None, payload: T) -> None:
        """One record read from `source`; `ts` None for a record without an event time."""
        waiting = self._sources.get(source)
        if waiting is None:
            waiting = self._sources[source] = _Waiting()
        if ts is not None and ts > waiting.key:
            waiting.key = ts
        waiting.items.append((waiting.key, offset, payload))
        waiting.next_offset = offset + 1
        self._waiting += 1

    def release(self, behind: Mapping[Source, bool | None],
                now: float) -> list[tuple[Source, int, T]]:
        """The records that may leave, in event-time order.

        `behind` says, for each partition read, whether Kafka holds records of it not read
        yet (None: not known yet, taken as behind).
        """
        bound = self._bound(behind)
        heads = [(waiting.items[0][0], source) for source, waiting in self._sources.items()
                 if waiting.items]
        if not heads:
            self._stalled_since = None
            return []
        if bound < min(key for key, _ in heads):
            if self._stalled_since is None:
                self._stalled_since = now
            stalled = now - self._stalled_since >= self.max_wait_s
            if not stalled and self._waiting <= self.max_buffered:
                return []
            bound = 2**63
        self._stalled_since = None
        heapq.heapify(heads)
        released: list[tuple[Source, int, T]] = []
        while heads and heads[0][0] <= bound:
            _, source = heads[0]
            items = self._sources[source].items
            _, offset, payload = items.popleft()
            released.append((source, offset, payload))
            if items:
                heapq.heapreplace(heads, (items[0][0], source))
            else:
                heapq.heappop(heads)
        self._waiting -= len(released)
        return released

    def _bound(self, behind: Mapping[Source, bool | None]) -> int:
        bound = 2**63
        for source, is_behind in behind.items():
            if is_behind is False:
                continue
            waiting = self._sources.get(source)
            if waiting is None or not waiting.items:
                return _LOWEST  # it may still deliver anything
            # Its records so far are waiting here; the next one is at least this late.
            bound = min(bound, waiting.items[-1][0])
        return bound

    def positions(self) -> dict[Source, int]:
        """Per partition, the offset to resume from: the first record still waiting, or
        the one after the last record read. Committing these loses nothing."""
        positions = {}
        for source, waiting in self._sources.items():
            if waiting.items:
                positions[source] = waiting.items[0][1]
            elif waiting.next_offset is not None:
                positions[source] = waiting.next_offset
        return positions

    def drop(self, source: Source) -> None:
        """A partition was revoked: its waiting records will be read again by its new owner."""
        waiting = self._sources.pop(source, None)
        if waiting is not None:
            self._waiting -= len(waiting.items)
