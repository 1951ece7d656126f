"""Fewer hops: validated items that the events-by-customer topic would carry back to this
same worker are handed to the attributing stage in process instead.

An input partition p whose topic has as many partitions as the events-by-customer topic
is co-partitioned with it: Faust's assignor gives partition p of both to the same worker.
An item of input partition p whose destination is events-by-customer partition p (an
event whose customer_id the default partitioner, murmur2, puts there; a reject whose
source partition counts there) skips the topic and is applied to that partition's state
at once; every other item takes the topic as before.

Exactly once: the customer partition counts an item once by its source offset (a
watermark per source partition), so every item of one source partition for one
destination must arrive in offset order, all by one way. Here, every item of input
partition p for partition p is handed over and none is produced, so only a worker of an
earlier version can have left such items in the topic: before the first hand-over from
an input partition after an assignment, its events-by-customer partition is read up to
the end offset it had then. The hot path commits the input offset only after the state
those items changed is written to its changelog, as it does for the internal topics.
"""

from __future__ import annotations

from stream_app._engine import Accepted

Source = tuple[str, int]  # input topic, partition

# An item handed over in process: an accepted event with its source offset and stamp
# (topic, partition, offset, stamp, event), or another item (tick, reject) encoded.
HandedItem = tuple[str, int, int, int | None, Accepted] | bytes


class Handoff:
    """Which validated items skip the events-by-customer topic (see the module's doc)."""

    def __init__(self, partitions: int) -> None:
        # Of the events-by-customer topic.
        self.partitions = partitions
        # Input partitions whose items for their own partition are handed over.
        self._handing: set[Source] = set()
        # Per events-by-customer partition: the end offset to read to before the first
        # hand-over, as first known after the assignment.
        self._read_to: dict[int, int] = {}

    def admit(
        self,
        source: Source,
        source_partitions: int | None,
        state_loaded: bool,
        read: int | None,
        end: int | None,
    ) -> bool:
        """Whether a fetched batch of this input partition may be validated now; if not,
        read it again later. `source_partitions`: its topic's partition count (None: not
        known); `state_loaded`: whether its events-by-customer partition's state is
        loaded here; `read` and `end`: the offset that partition is read to, every record
        before it applied (None: not known or records not applied yet), and its end offset
        (None: not known)."""
        if source in self._handing:
            return True
        if source_partitions is None:
            return False
        if source_partitions != self.partitions:
            return True  # not co-partitioned: every item takes the topic
        if not state_loaded or end is None:
            return False
        target = self._read_to.setdefault(source[1], end)
        if read is None or read < target:
            return False
        self._handing.add(source)
        return True

    def forget(self, sources: set[Source]) -> None:
        """A rebalance began: these input partitions may move; whoever owns them next
        checks again before handing over."""
        self._handing -= sources
        for partition in {partition for _, partition in sources}:
            self._read_to.pop(partition, None)

    def handing(self, source: Source) -> bool:
        return source in self._handing

    def destinations(self) -> set[int]:
        """The events-by-customer partitions items are handed to."""
        return {partition for _, partition in self._handing}

    def handed_partitions(self) -> dict[Source, int]:
        """Per input partition handing over, the one events-by-customer partition whose
        items it hands over (see `destination`)."""
        return {source: source[1] for source in self._handing}

    def destination(self, source: Source, partition: int) -> int | None:
        """The events-by-customer partition an item of this source for `partition` (an
        event's customer's, by murmur2; a reject's) is handed to, or None: produce it."""
        return partition if source in self._handing and partition == source[1] else None
