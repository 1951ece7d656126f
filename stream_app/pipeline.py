"""The coordinator of the three stages (stream_app/stages/): which stage a topic feeds,
rebalances, and the clock the runtime reads for them.

validate:  input topics -> dead-letter topic (rejects) + events-by-customer (valid events)
attribute: events-by-customer -> per-partition state (changelog) + window partials
publish:   window partials -> rates board (changelog) + rates topic

Every handler takes one partition's fetched records at a time, queues what it produces,
and returns the offset to commit; the caller flushes the producer before committing, so
nothing is committed that is not durable. State writes come after the outputs they
imply are flushed, so a replay re-sends outputs rather than losing them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from typing import Protocol

from stream_app.domain.board import RatesBoard
from stream_app.domain.drops import DropDetector
from stream_app.domain.partition import CustomerPartition
from stream_app.domain.window_config import WindowConfig
from stream_app.settings import Settings
from stream_app.stages.attribute import AttributeStage
from stream_app.stages.handoff import Handoff
from stream_app.stages.messages import Now, Output, PackedStateStore, Record
from stream_app.stages.publish import ActiveAlert, PublishStage
from stream_app.stages.validate import ValidateStage


class PartitionStage(Protocol):
    """A stage fed one internal partition at a time, owning that partition's state."""

    def handle(self, partition: int, records: Sequence[Record], now: Now) -> list[Output]: ...
    def load(self, partition: int) -> object: ...
    def persist(self, partition: int) -> None: ...
    def has_state(self, partition: int) -> bool: ...
    def next_offset(self, partition: int) -> int | None: ...
    def keep_only(self, owned: Container[int]) -> None: ...


def system_clock() -> Now:
    return Now(monotonic=time.monotonic(), wall=time.time())


def window_config(settings: Settings) -> WindowConfig:
    return WindowConfig(
        sizes=tuple((size.label, size.ms) for size in settings.windows),
        attribution_ms=settings.attribution_window_ms,
        grace_ms=settings.grace_ms,
        max_label_values=settings.max_label_values,
    )


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        partition_store: PackedStateStore,
        board_store: PackedStateStore,
        clock: Callable[[], Now] = system_clock,
    ) -> None:
        self.settings = settings
        self.config = window_config(settings)
        self.bands = settings.band_scales
        self._clock = clock
        self.validating = ValidateStage(settings, started_at=clock().monotonic)
        self.attributing = AttributeStage(settings, self.config, partition_store)
        self.publishing = PublishStage(settings, self.config, self.bands, board_store)
        self._stages: dict[str, PartitionStage] = {
            settings.topic_events: self.attributing,
            settings.topic_partials: self.publishing,
        }
        # The events-by-customer partitions whose state changed by items handed over in
        # process (stages/handoff.py): the caller persists them before it commits the
        # input offsets.
        self.handed_partitions: set[int] = set()
        # Records not yet read, per input or internal partition, as of its last batch.
        self.lag: dict[tuple[str, int], int] = {}
        # Moves whenever something /metrics shows may have changed (web.ExpositionCache);
        # who changes `lag` from outside calls `touch`.
        self.version = 0

    def now(self) -> Now:
        return self._clock()

    def touch(self) -> None:
        self.version += 1

    # What the read model and the runtime read of the stages' state.
    @property
    def partitions(self) -> dict[int, CustomerPartition]:
        return self.attributing.partitions

    @property
    def boards(self) -> dict[int, RatesBoard]:
        return self.publishing.boards

    @property
    def detectors(self) -> dict[int, DropDetector]:
        return self.publishing.detectors

    @property
    def events_in(self) -> int:
        return self.validating.events_in

    @property
    def events_in_by_topic(self) -> Mapping[str, int]:
        return self.validating.events_in_by_topic

    @property
    def handoff(self) -> Handoff:
        return self.validating.handoff

    def handles(self, topic: str) -> bool:
        return self.is_input(topic) or topic in self._stages

    def is_input(self, topic: str) -> bool:
        return self.validating.is_input(topic)

    def forget_waiting_inputs(self, revoked: Iterable[tuple[str, int]]) -> None:
        """A rebalance began (see ValidateStage.forget_waiting_inputs)."""
        self.validating.forget_waiting_inputs(revoked)

    def keep_only(self, assigned: Iterable[tuple[str, int]]) -> None:
        """A rebalance ended: the state of partitions not assigned any more belongs to
        another worker. Kept partitions keep their live state: an eager rebalance revokes
        every partition first, and Faust then recovers a kept one only from where its
        last recovery ended, so the table holds what was written since, not the state."""
        owned = set(assigned)
        self.touch()
        for key in [key for key in self.lag if key not in owned]:
            del self.lag[key]
        self.validating.keep_only(owned)
        for topic, stage in self._stages.items():
            stage.keep_only({partition for owned_topic, partition in owned if owned_topic == topic})

    # -- stage 1 ---------------------------------------------------------------------
    def validate(
        self,
        batches: dict[tuple[str, int], Sequence[Record]],
        behind: Mapping[tuple[str, int], bool | None] | None = None,
        now: float | None = None,
        quiet: Container[tuple[str, int]] = (),
        wall_clock: float | None = None,
    ) -> list[Output]:
        """ValidateStage.handle with the clock read here: `now` (monotonic seconds) and
        `wall_clock` (epoch seconds) default to the pipeline's clock. The items it hands
        over in process are applied by the attributing stage here; their partitions are
        added to `handed_partitions`."""
        clock = self._clock()
        self.touch()
        outputs = self.validating.handle(
            batches,
            Now(
                monotonic=clock.monotonic if now is None else now,
                wall=clock.wall if wall_clock is None else wall_clock,
            ),
            behind,
            quiet,
        )
        for partition, items in self.validating.take_handed().items():
            outputs.extend(self.attributing.apply_handed(partition, items))
            self.handed_partitions.add(partition)
        return outputs

    def take_rewinds(self) -> dict[tuple[str, int], int]:
        return self.validating.take_rewinds()

    @property
    def waiting_inputs(self) -> int:
        return self.validating.waiting_inputs

    def input_positions(self) -> dict[tuple[str, int], int]:
        return self.validating.input_positions()

    def idle_ticks(self, now: float) -> list[Output]:
        """ValidateStage.idle_ticks, from the restored partitions' stream time before any
        input arrived."""
        return self.validating.idle_ticks(now, self.attributing.stream_time())

    # -- stages 2 and 3 --------------------------------------------------------------
    def handle(
        self, topic: str, partition: int, records: Sequence[Record], now: Now | None = None
    ) -> list[Output]:
        """Hand one internal partition's records to the stage its topic feeds (see
        `handles`); `now` defaults to the pipeline's clock."""
        self.touch()
        return self._stages[topic].handle(partition, records, now or self._clock())

    def attribute(self, partition: int, records: Sequence[Record]) -> list[Output]:
        return self.handle(self.settings.topic_events, partition, records)

    def publish(self, partition: int, records: Sequence[Record]) -> list[Output]:
        return self.handle(self.settings.topic_partials, partition, records)

    def active_alerts(self) -> list[ActiveAlert]:
        return self.publishing.active_alerts()

    def load(self, topic: str, partition: int) -> None:
        """Rebuild a newly assigned partition's state from its recovered table entries."""
        self.touch()
        stage = self._stages.get(topic)
        if stage is not None:
            stage.load(partition)

    def has_state(self, topic: str, partition: int) -> bool:
        """Whether the state of an internal partition is loaded (see `load`)."""
        stage = self._stages.get(topic)
        return stage is not None and stage.has_state(partition)

    def next_offset(self, topic: str, partition: int) -> int | None:
        """The first record of an internal partition its loaded state has not applied
        (None: no state loaded here)."""
        stage = self._stages.get(topic)
        return None if stage is None else stage.next_offset(partition)

    def persist(self, topic: str, partition: int) -> None:
        stage = self._stages.get(topic)
        if stage is not None:
            stage.persist(partition)
