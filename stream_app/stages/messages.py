"""What goes into and out of a stage: fetched records, messages to produce, the time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from stream_app.domain.immutable import immutable


class Record(Protocol):
    """What the hot path needs of a fetched Kafka record (aiokafka's ConsumerRecord)."""

    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@immutable
class Output:
    """A message to produce; `partition` None lets the producer hash the key."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    headers: list[tuple[str, bytes]] | None = None


@immutable
class Now:
    """The clock as the runtime read it: `monotonic` seconds measure waits, `wall` (epoch
    seconds) stamps outputs and bounds the ts accepted."""

    monotonic: float
    wall: float


class StateStore(Protocol):
    """Where a stage keeps each partition's state: a changelog-backed table in the worker
    (runtime/state_store.py), read when a partition is loaded and written once per batch."""

    def load(self, partition: int) -> dict[str, Any]: ...
    def write(self, partition: int, changes: dict[str, Any]) -> None: ...


# A store key and its value in the compiled core's encoding (None deletes the key).
PackedEntry = tuple[str, bytes | None]
# The changelog records of one store write (a batch's changes, or the whole state as a
# snapshot), given the write's sequence number and the bytes a record holds at most
# (state_store.py).
WriteChunks = Callable[[int, int], list[bytes]]


class PackedStateStore(StateStore, Protocol):
    """A StateStore that also takes and gives the compiled core's encoded entries, or the
    changelog records it encodes itself (`write_chunked`: given a write's sequence number
    and the records' size): the customer partitions' state is written and restored
    without a Python object per entry."""

    def load_chunks(self, partition: int) -> tuple[dict[str, Any], list[bytes]]: ...
    def write_packed(
        self,
        partition: int,
        entries: list[PackedEntry],
        snapshot: WriteChunks | None = None,
    ) -> None: ...
    def write_chunked(
        self, partition: int, journal: WriteChunks, snapshot: WriteChunks
    ) -> None: ...
