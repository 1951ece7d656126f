"""Stage 2, attribute: events-by-customer -> per-partition state (changelog) + window partials.

Each events-by-customer partition's CustomerPartition (compiled core) drops duplicates,
attributes purchases to offers and counts windows; the changed windows' absolute counts
leave as partials for the publishing stage.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Sequence

from stream_app.domain.partition import CustomerPartition
from stream_app.domain.totals import OFFERS_TOTAL
from stream_app.domain.window_config import WindowConfig
from stream_app.settings import Settings
from stream_app.stages.handoff import HandedItem
from stream_app.stages.messages import Now, Output, PackedStateStore, Record

log = logging.getLogger(__name__)

_PARTIALS_PER_MESSAGE = 2_000


class AttributeStage:
    def __init__(
        self, settings: Settings, config: WindowConfig, partition_store: PackedStateStore
    ) -> None:
        self.settings = settings
        self.config = config
        self._partition_store = partition_store
        self.partitions: dict[int, CustomerPartition] = {}

    def has_state(self, partition: int) -> bool:
        return partition in self.partitions

    def next_offset(self, partition: int) -> int | None:
        state = self.partitions.get(partition)
        return None if state is None else state.next_offset

    def keep_only(self, owned: Container[int]) -> None:
        """A rebalance ended: the state of partitions not assigned any more belongs to
        another worker."""
        gone = sorted(p for p in self.partitions if p not in owned)
        if gone:
            log.info("events-by-customer partitions %s moved away: their state is dropped", gone)
        for partition in gone:
            del self.partitions[partition]

    def stream_time(self) -> int | None:
        """The latest stream time of the partitions loaded (None: none has one)."""
        return max(
            (p.stream_time for p in self.partitions.values() if p.stream_time is not None),
            default=None,
        )

    def load(self, partition: int) -> CustomerPartition:
        """The partition's state, restored from its recovered table entries the first time."""
        state = self.partitions.get(partition)
        if state is None:
            older, chunks = self._partition_store.load_chunks(partition)
            state = CustomerPartition.restore_chunks(self.config, older, chunks)
            self.partitions[partition] = state
            log.info(
                "events-by-customer partition %d loaded: next offset %d, %d offers "
                "counted, %d open",
                partition,
                state.next_offset,
                sum(state.totals[OFFERS_TOTAL].values()),
                state.open_offers(),
            )
        return state

    def handle(self, partition: int, records: Sequence[Record], now: Now) -> list[Output]:
        state = self.load(partition)
        state.apply_records(records)  # decoded and applied in the compiled core
        return self._partials(partition, state)

    def apply_handed(self, partition: int, items: list[HandedItem]) -> list[Output]:
        """Apply the items the validating stage handed over in process (stages/handoff.py);
        persist the partition before the input offsets they came from are committed."""
        state = self.load(partition)
        state.apply_handed(items)
        return self._partials(partition, state)

    def _partials(self, partition: int, state: CustomerPartition) -> list[Output]:
        # Only the last message moves the board's stream time: the board judges a
        # message's partials by the stream time before it, and this batch's partials
        # belong to windows that were not final before this batch.
        return [
            Output(self.settings.topic_partials, None, message, partition=0)
            for message in state.take_partials_encoded(partition, _PARTIALS_PER_MESSAGE)
        ]

    def persist(self, partition: int) -> None:
        state = self.partitions.get(partition)
        if state is not None:
            self._partition_store.write_chunked(
                partition, state.take_changes_chunks, state.snapshot_chunks
            )
