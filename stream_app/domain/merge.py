"""Input partitions merged in event-time order across fetches, as Kafka Streams does.

A worker reads its input partitions a fetch at a time, and a fetch rarely holds every
partition: after a restart with a backlog, the records of one partition can come minutes
of event time ahead of another's. Forwarded as they come, the ones ahead would push
stream time past the others' windows and make them late, and a last-touch purchase could
be decided before its offer arrived. So records wait here until every partition that is
still behind (has records in Kafka not read yet) has shown how far it has got: a record
leaves once no partition behind can still deliver an older one. A partition that has
caught up holds the others back until a fetch of it answers with nothing new (it is
`quiet`: its next record is written after that answer, a live arrival, as Kafka Streams
treats an empty partition whose lag is 0). Caught up means caught up when its last fetch
answered, and a pass of the worker can hand over records fetched seconds before (a
backlog, a loaded machine): records written since are unknown until the next answer,
whenever that comes, so no fixed wait ends the hold. A live stream is held for a fetch
round.

Each partition's records leave in offset order (its order key is the running largest ts,
a reject taking the key of the record before it), so the receiving stage can count each
source item once by its offset. A partition whose lag is not known yet (just assigned,
no fetch answered) counts as behind until a fetch of it tells its lag (a wait longer than
`max_wait_s` is reported); beyond `max_buffered` waiting records the oldest leave anyway,
so memory stays bounded.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
Source = tuple[str, int]  # (topic, partition)

_LOWEST = -(2**63)


@dataclass(slots=True)
class _Waiting(Generic[T]):
    items: deque[tuple[int, int, T]] = field(default_factory=deque)  # (key, offset, payload)
    key: int = _LOWEST
    # The key of its last record that left: where `key` starts again after a rewind.
    left_key: int = _LOWEST
    next_offset: int | None = None
    # After a rewind: the offset its next record must have (see `admit`), and whether a
    # seek back to it was asked for already.
    resume_at: int | None = None
    sought: bool = False


class EventTimeMerge(Generic[T]):
    def __init__(self, max_buffered: int, max_wait_s: float) -> None:
        self.max_buffered = max_buffered
        self.max_wait_s = max_wait_s
        self._sources: dict[Source, _Waiting[T]] = {}
        self._waiting = 0
        self._unknown_since: dict[Source, float] = {}
        # Partitions whose lag stayed unknown for max_wait_s (still waited for), and those
        # of them not reported yet; records that left only because too many waited, since the
        # last report (take_order_breaks).
        self._unknown_reported: set[Source] = set()
        self._newly_unknown: list[Source] = []
        self._forced = 0

    def __len__(self) -> int:
        return self._waiting

    def add(self, source: Source, offset: int, ts: int | None, payload: T) -> None:
        """One record read from `source`; `ts` None for a record without an event time."""
        waiting = self._sources.get(source)
        if waiting is None:
            waiting = self._sources[source] = _Waiting()
        elif waiting.next_offset is not None and offset < waiting.next_offset:
            return  # read again after a seek back: it waits here or has left already
        if ts is not None and ts > waiting.key:
            waiting.key = ts
        waiting.items.append((waiting.key, offset, payload))
        waiting.next_offset = offset + 1
        self._waiting += 1

    def release(
        self, behind: Mapping[Source, bool | None], now: float, quiet: Container[Source] = ()
    ) -> list[tuple[Source, int, T]]:
        """The records that may leave, in event-time order.

        `behind` says, for each partition read, whether Kafka holds records of it not read
        yet (None: not known yet; taken as behind). `quiet` names caught-up
        partitions that a fetch found empty after their last record: they hold nothing back;
        any other caught-up partition that delivered holds the others at its last key.
        """
        bound = self._bound(behind, now, quiet)
        heads = [
            (waiting.items[0][0], source)
            for source, waiting in self._sources.items()
            if waiting.items
        ]
        heapq.heapify(heads)
        released: list[tuple[Source, int, T]] = []
        # Beyond max_buffered, the oldest leave anyway, down to half of it: order degrades
        # gracefully rather than memory growing.
        keep = self.max_buffered // 2 if self._waiting > self.max_buffered else self._waiting
        while heads and (heads[0][0] <= bound or self._waiting - len(released) > keep):
            if heads[0][0] > bound:
                self._forced += 1
            _, source = heads[0]
            waiting = self._sources[source]
            items = waiting.items
            waiting.left_key, offset, payload = items.popleft()
            released.append((source, offset, payload))
            if items:
                heapq.heapreplace(heads, (items[0][0], source))
            else:
                heapq.heappop(heads)
        self._waiting -= len(released)
        return released

    def _bound(
        self, behind: Mapping[Source, bool | None], now: float, quiet: Container[Source]
    ) -> int:
        bound = 2**63
        for source, is_behind in behind.items():
            waiting = self._sources.get(source)
            if is_behind is None:
                # Not known is behind: until a fetch of it answers, it may hold records
                # hours older than the others' (a restart over a backlog, a kill -9 in
                # start-up). Waiting long is reported; memory stays bounded by
                # max_buffered, beyond which the oldest records leave anyway.
                first_unknown = self._unknown_since.setdefault(source, now)
                if now - first_unknown >= self.max_wait_s and source not in self._unknown_reported:
                    self._unknown_reported.add(source)
                    self._newly_unknown.append(source)
            else:
                self._lag_known(source)
            if is_behind is False:
                # Caught up as of its last answer; records written since that answer are
                # unknown until the next one, which `quiet` tells.
                delivered = waiting is not None and waiting.next_offset is not None
                if delivered and source not in quiet:
                    assert waiting is not None
                    bound = min(bound, waiting.key)
                continue
            if waiting is None or not waiting.items:
                # It may still deliver anything. No time limit: its records are in Kafka
                # and on their way (a partition that lags is always fetched).
                return _LOWEST
            # Its records so far are waiting here; the next one is at least this late.
            bound = min(bound, waiting.items[-1][0])
        return bound

    def _lag_known(self, source: Source) -> None:
        """End the wait for `source`'s lag (known now, or to be asked again from scratch):
        a later unknown lag is a new wait, timed and reported anew."""
        self._unknown_since.pop(source, None)
        self._unknown_reported.discard(source)

    def take_order_breaks(self) -> tuple[list[Source], int]:
        """What held or broke the order since the last call: the partitions whose lag
        stayed unknown for `max_wait_s` (each once per such wait; the others' records still
        wait for them), and how many records left only because more than `max_buffered`
        waited (records of the partitions not waited for can then come later than
        `stream time - grace`: counted late)."""
        unknown, self._newly_unknown = self._newly_unknown, []
        forced, self._forced = self._forced, 0
        return unknown, forced

    def sources(self) -> list[Source]:
        return list(self._sources)

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

    def admit(self, source: Source, first_offset: int, last_offset: int) -> int | None:
        """Check a fetched batch of `source`, offsets `first_offset`..`last_offset`, before
        its records are added: the offset to read `source` again from when the batch
        would skip records after a `rewind`; None when it may be added.

        A batch fetched before a rebalance can be handled after it, when `rewind` has
        dropped the records before it: added, it would be forwarded, and its offset
        committed, past records that are never forwarded (the receiving stage counts a
        source's items once by offset). The batch is dropped and its partition read again
        from the rewind point. Once only: offsets may legitimately jump (transaction
        markers, retention), so the batch that follows the seek back is taken.
        """
        waiting = self._sources.get(source)
        if waiting is None or waiting.resume_at is None:
            return None
        resume_at = waiting.resume_at
        if first_offset > resume_at and not waiting.sought:
            waiting.sought = True
            return resume_at
        if last_offset >= resume_at:
            waiting.resume_at = None
            waiting.sought = False
        return None

    def rewind(self, source: Source) -> None:
        """A rebalance began, and `source` may stay here: its waiting records are dropped
        (they were not committed; whoever owns it next reads them again), and its next
        record must be the first of them (see `admit`)."""
        self._lag_known(source)
        waiting = self._sources.get(source)
        if waiting is None:
            return
        if waiting.items:
            waiting.next_offset = waiting.items[0][1]
            self._waiting -= len(waiting.items)
            waiting.items.clear()
            # The records read again are keyed by their own event time, not by that of
            # the dropped records after them.
            waiting.key = waiting.left_key
        waiting.resume_at = waiting.next_offset
        waiting.sought = False

    def forget(self, source: Source) -> None:
        """`source` is owned elsewhere now: its new owner reads from the committed offset."""
        self._lag_known(source)
        waiting = self._sources.pop(source, None)
        if waiting is not None:
            self._waiting -= len(waiting.items)
