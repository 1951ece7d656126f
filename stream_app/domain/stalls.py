"""Stalled partitions: records waiting in Kafka while the offset handled does not move.

The worker checks each partition it processes now and then (Faust's liveness timer) and
tells this detector what it sees; a stall is reported once when it has lasted `timeout_s`,
and its end once when the partition moves again. The caller passes the clock's reading.
"""

from __future__ import annotations

from dataclasses import dataclass

Partition = tuple[str, int]  # topic, partition


@dataclass(frozen=True)
class Stalled:
    """A partition with `waiting` records past the last one handled, none handled for
    `seconds`."""

    partition: Partition
    seconds: float
    waiting: int

    def message(self) -> str:
        """What the worker logs, with what to do about it."""
        topic, partition = self.partition
        return (
            f"{topic} partition {partition}: {self.waiting} records wait and none was "
            f"handled for {self.seconds:.0f} s (stream_processing_timeout). Look above in "
            "this worker's log for what it waits on (a broker that does not answer, a "
            "failed send); if nothing explains it, restart the worker: it resumes from "
            "its last commit and loses nothing."
        )


@dataclass(frozen=True)
class Resumed:
    """A partition reported stalled is not any more (it handled records, or none wait),
    `seconds` after its stall began."""

    partition: Partition
    seconds: float

    def message(self) -> str:
        topic, partition = self.partition
        return f"{topic} partition {partition} moves again after a stall of {self.seconds:.0f} s"


@dataclass
class _Seen:
    handled: int | None
    since: float | None  # when records were first seen waiting past `handled` (None: not)
    reported: bool = False


class StallDetector:
    def __init__(self, timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError("a stall timeout must be longer than 0")
        self.timeout_s = timeout_s
        self._seen: dict[Partition, _Seen] = {}

    def observe(
        self, partition: Partition, now: float, handled: int | None, waiting: int
    ) -> Stalled | Resumed | None:
        """One look at a partition: `handled` is the offset of the last record handled
        (None: none yet), `waiting` how many records Kafka holds past it."""
        seen = self._seen.get(partition)
        if seen is not None and seen.handled == handled and waiting > 0:
            if seen.since is None:
                seen.since = now
            elif not seen.reported and now - seen.since >= self.timeout_s:
                seen.reported = True
                return Stalled(partition, now - seen.since, waiting)
            return None
        # Progress, or nothing to do: a stall, if any, starts counting from here.
        self._seen[partition] = _Seen(handled, now if waiting > 0 else None)
        if seen is not None and seen.reported and seen.since is not None:
            return Resumed(partition, now - seen.since)
        return None
