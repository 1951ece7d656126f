"""Records skipped in an internal partition: a fetch that starts past the first record the
partition's state has not applied.

Each internal partition's state (a customer partition, the rates board) carries its next
offset, the first record it has not applied, and applies whatever comes at or after it:
a record before it is one applied already, read again after a restart. Records between
that offset and the first one of a fetch would be lost for good, the next offset moving
past them. The consumer's position can be there: a partition newly assigned is fetched
from wherever aiokafka's position stands once Faust's recovery resumes it, and Faust seeks
it to the committed offset only after that (faust/tables/recovery.py,
`on_recovery_completed`: `resume_partitions`, then `perform_seek`); the joining and leaving
scale-out test lost 7 purchases in a fetch that began 16 records past its state's offset.

So such a fetch is not applied: the partition is read again from the state's next offset.
Once only: records that are gone (retention deleted them while no worker read the
partition) leave a gap that reading again cannot fill, and the fetch that follows the
seek back is applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Partition = tuple[str, int]  # topic, partition


@dataclass(frozen=True)
class Skipped:
    """A fetch of `partition` beginning at `first_offset`, past `next_offset`, the first
    record its state has not applied. `gone`: it was read again from there already and
    began past it once more, so the records between are gone; else read it again from
    `next_offset`."""

    partition: Partition
    first_offset: int
    next_offset: int
    gone: bool

    def message(self) -> str:
        topic, partition = self.partition
        missing = self.first_offset - self.next_offset
        if self.gone:
            return (
                f"{topic} partition {partition}: {missing} records from offset "
                f"{self.next_offset} on are gone from Kafka (retention deleted them before "
                "this partition's state applied them); going on without them"
            )
        return (
            f"{topic} partition {partition}: a fetch began at offset {self.first_offset}, "
            f"{missing} records past the first one its state has not applied "
            f"({self.next_offset}); reading again from there"
        )


@dataclass
class GapGuard:
    """Remembers, per internal partition, the offset it was sought back to (see the
    module's doc)."""

    _sought: dict[Partition, int] = field(default_factory=dict)

    def check(self, partition: Partition, first_offset: int, next_offset: int) -> Skipped | None:
        """What to do with a fetch of `partition` beginning at `first_offset`, its state's
        next offset being `next_offset`: None to apply it."""
        sought = self._sought.pop(partition, None)
        if first_offset <= next_offset:
            return None
        if sought == next_offset:
            return Skipped(partition, first_offset, next_offset, gone=True)
        self._sought[partition] = next_offset
        return Skipped(partition, first_offset, next_offset, gone=False)

    def clear(self) -> None:
        """A rebalance: every partition's position is set again."""
        self._sought.clear()
