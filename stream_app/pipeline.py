"""The three stages of the worker as batch handlers around the pure core.

validate:  input topics -> dead-letter topic (rejects) + events-by-customer (valid events)
attribute: events-by-customer -> per-partition state (changelog) + window partials
publish:   window partials -> rates board (changelog) + rates topic

Every handler takes one partition's fetched records at a time, queues what it produces,
and returns the offset to commit; the caller flushes the producer before committing, so
nothing is committed that is not durable. State writes come after the outputs they
imply are flushed, so a replay re-sends outputs rather than losing them.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Container, Iterable, Mapping, Sequence
from typing import Any, Protocol

from stream_app._engine import Accepted
from stream_app.core.board import RatesBoard, decode_partials
from stream_app.core.dedupe import EventIdMemory
from stream_app.core.drops import FIRED, DropAlert, DropDetector
from stream_app.core.events import InvalidEvent, validate_batch
from stream_app.core.fastjson import dumps
from stream_app.core.forwarding import Forwarded, encode_forwarded, tick
from stream_app.core.immutable import immutable
from stream_app.core.merge import EventTimeMerge
from stream_app.core.partition import OFFERS_TOTAL, CustomerPartition, WindowConfig
from stream_app.core.views import CHANNEL_SEGMENT, Key
from stream_app.handoff import Handoff
from stream_app.settings import Settings
from stream_app.state_store import PartitionStore

log = logging.getLogger(__name__)

# An item handed over in process: an accepted event with its source offset and stamp
# (topic, partition, offset, stamp, event), or another item (tick, reject) encoded.
HandedItem = tuple[str, int, int, int | None, Accepted] | bytes

_PARTIALS_PER_MESSAGE = 2_000
# Input records held back for event-time order (core/merge.py): room for a few fetches
# of every input partition (a fetch brings up to 1 MB, some 5,000 records, of each), about
# 0.5 KB each; and how long a partition whose lag is unknown holds the others before
# that is reported (it holds them until a fetch tells its lag).
_MAX_WAITING_INPUTS = 200_000
_MAX_INPUT_WAIT_S = 10.0
# How long a caught-up input partition that just delivered holds the others back at most,
# when no fetch of it answers in between (one that answers empty ends the wait at once).
_INPUT_IDLE_WAIT_S = 2.0


class Record(Protocol):
    """What the hot path needs of a fetched Kafka record (aiokafka's ConsumerRecord)."""

    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


Send = Callable[..., Awaitable[Any]]


@immutable
class Output:
    """A message to produce; `partition` None lets the producer hash the key."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    headers: list[tuple[str, bytes]] | None = None


@immutable
class ActiveAlert:
    """A rate-drop alert that fired and has not resolved yet, for the live page.

    `fired` is the alert as this process published it, with `fired_at_ms` its emitted_at;
    None for one that fired before the worker (re)started, known only from the detector's
    restored state.
    """

    label: str
    key: Key
    fired: DropAlert | None
    fired_at_ms: int | None


def window_config(settings: Settings) -> WindowConfig:
    return WindowConfig(
        sizes=tuple((size.label, size.ms) for size in settings.windows),
        attribution_ms=settings.attribution_window_ms,
        grace_ms=settings.grace_ms,
        max_label_values=settings.max_label_values,
    )


class Pipeline:
    def __init__(
        self, settings: Settings, partition_store: PartitionStore, board_store: PartitionStore
    ) -> None:
        self.settings = settings
        self.config = window_config(settings)
        self.bands = settings.band_scales
        self._partition_store = partition_store
        self._board_store = board_store
        # Per input topic: whether it carries offers (else purchases).
        self._carries_offers: dict[str, bool] = {
            settings.topic_offers: True,
            settings.topic_purchases: False,
        }
        # Input partitions to read again from an offset, and drop the batch of (validate).
        self._rewinds: dict[tuple[str, int], int] = {}
        # The largest ts of the events this worker forwarded that were not duplicates:
        # the stamp of what it forwards next.
        self._stream_time: int | None = None
        # The event_ids forwarded, so that a duplicate does not move the stamp (the
        # attributing stage decides what counts as a duplicate; this only keeps a
        # duplicate's ts out of stream time).
        self._forwarded_ids = EventIdMemory(settings.attribution_window_ms)
        # UPSELL_IDLE_ADVANCE: stream time and the wall clock when the last input arrived.
        self._last_input: tuple[int | None, float] = (None, time.monotonic())
        self.partitions: dict[int, CustomerPartition] = {}
        # Items handed to the attributing stage in process (stream_app/handoff.py), per
        # events-by-customer partition, until the end of the validate call.
        self.handoff = Handoff(settings.partitions)
        self._handed: dict[int, list[HandedItem]] = {}
        # The events-by-customer partitions whose state changed that way: the caller
        # persists them (`persist_partition`) before it commits the input offsets.
        self.handed_partitions: set[int] = set()
        self.boards: dict[int, RatesBoard] = {}
        # Rate-drop detection beside each board, persisted with it.
        self.detectors: dict[int, DropDetector] = {}
        # The fired alert of every series whose drop is active, as published: (alert, ms).
        self._fired_alerts: dict[tuple[str, Key], tuple[DropAlert, int]] = {}
        self.events_in = 0
        # Input records waiting for the other input partitions to catch up (validate).
        self._merge: EventTimeMerge[Accepted | tuple[Record, InvalidEvent]] = EventTimeMerge(
            max_buffered=_MAX_WAITING_INPUTS,
            max_wait_s=_MAX_INPUT_WAIT_S,
            idle_wait_s=_INPUT_IDLE_WAIT_S,
        )
        # The same by input topic, for the throughput metric.
        self.events_in_by_topic: Counter[str] = Counter()
        # Records that left the merge early because too many waited, not logged yet.
        self._forced_unreported = 0
        self._forced_reported_at = float("-inf")
        # Records not yet read, per input or internal partition, as of its last batch.
        self.lag: dict[tuple[str, int], int] = {}
        # Moves whenever something /metrics shows may have changed (web.ExpositionCache);
        # who changes `lag` from outside calls `touch`.
        self.version = 0

    def touch(self) -> None:
        self.version += 1

    def handles(self, topic: str) -> bool:
        return topic in self._carries_offers or topic in (
            self.settings.topic_events,
            self.settings.topic_partials,
        )

    def forget_waiting_inputs(self, revoked: Iterable[tuple[str, int]]) -> None:
        """A rebalance began: input records held for event-time order were not committed,
        and whoever owns their partitions next reads them again from the committed offset
        (see EventTimeMerge.rewind)."""
        sources = {
            (topic, partition) for topic, partition in revoked if topic in self._carries_offers
        }
        for source in sources:
            self._merge.rewind(source)
        self.handoff.forget(sources)

    def keep_only(self, assigned: Iterable[tuple[str, int]]) -> None:
        """A rebalance ended: the state of partitions not assigned any more belongs to
        another worker. Kept partitions keep their live state: an eager rebalance revokes
        every partition first, and Faust then recovers a kept one only from where its
        last recovery ended, so the table holds what was written since, not the state."""
        owned = set(assigned)
        self.touch()
        for key in [key for key in self.lag if key not in owned]:
            del self.lag[key]
        for source in self._merge.sources():
            if source not in owned:
                self._merge.forget(source)
        gone = sorted(p for p in self.partitions if (self.settings.topic_events, p) not in owned)
        if gone:
            log.info("events-by-customer partitions %s moved away: their state is dropped", gone)
        for partition in gone:
            del self.partitions[partition]
        for partition in [p for p in self.boards if (self.settings.topic_partials, p) not in owned]:
            del self.boards[partition]
            self.detectors.pop(partition, None)

    def is_input(self, topic: str) -> bool:
        return topic in self._carries_offers

    def stage_of(self, topic: str) -> Callable[[int, Sequence[Record]], list[Output]]:
        if topic == self.settings.topic_events:
            return self.attribute
        return self.publish

    # -- stage 1 ---------------------------------------------------------------------
    def validate(
        self,
        batches: dict[tuple[str, int], Sequence[Record]],
        behind: Mapping[tuple[str, int], bool | None] | None = None,
        now: float | None = None,
        quiet: Container[tuple[str, int]] = (),
        wall_clock: float | None = None,
    ) -> list[Output]:
        """Validate input records and forward what may leave, in event-time order.

        Records wait in an EventTimeMerge (core/merge.py) until no input partition that is
        still `behind` (records in Kafka not read yet) can deliver an older one, so that a
        backlog read a few partitions at a time does not push stream time ahead of the
        others; a caught-up partition that a fetch found empty since its last record
        (`quiet`) holds nothing back. Without `behind`, all records leave at once. Each
        source partition's items leave in offset order, rejects included: the receiving
        stage counts an item once by its source offset. Commit `input_positions()` once
        the outputs are flushed. A batch that would skip records after a rebalance is
        not taken: seek its partition to the offset `take_rewinds` names. `wall_clock`
        (epoch seconds, default now) bounds the ts accepted (UPSELL_MAX_FUTURE).
        """
        settings = self.settings
        merge = self._merge
        now = time.monotonic() if now is None else now
        latest_ts = self._latest_ts(time.time() if wall_clock is None else wall_clock)
        self.touch()
        for (topic, partition), records in batches.items():
            source = (topic, partition)
            if not records:
                continue
            rewind_to = merge.admit(source, records[0].offset, records[-1].offset)
            if rewind_to is not None:
                log.info(
                    "input %s[%d]: a batch from offset %d is read again from %d",
                    topic,
                    partition,
                    records[0].offset,
                    rewind_to,
                )
                self._rewinds[source] = rewind_to
                continue
            values = [record.value for record in records]
            outcomes = validate_batch(
                values, self._carries_offers[topic], latest_ts, settings.partitions
            )
            for record, checked in zip(records, outcomes, strict=True):
                if isinstance(checked, InvalidEvent):
                    # A reject keeps its record: the dead-letter copy is the original.
                    merge.add(source, record.offset, None, (record, checked), now)
                else:
                    merge.add(source, record.offset, checked.ts, checked, now)
            self.events_in += len(records)
            self.events_in_by_topic[topic] += len(records)
        if behind is None:
            behind = {}  # nothing to wait for
        released = merge.release(behind, now, quiet)
        self._report_order_breaks(now)
        outputs: list[Output] = []
        stamp = self._stream_time
        forwarded_ids = self._forwarded_ids
        for (topic, partition), offset, outcome in released:
            if isinstance(outcome, tuple):
                record, invalid = outcome
                outputs.extend(self._reject(topic, partition, record, invalid))
                continue
            event = outcome
            handed_to = self.handoff.destination((topic, partition), event.partition)
            if handed_to is None:
                item = event.item(topic, partition, offset, stamp)
                outputs.append(Output(settings.topic_events, event.key, item))
            else:
                self._handed.setdefault(handed_to, []).append(
                    (topic, partition, offset, stamp, event)
                )
            if forwarded_ids.is_duplicate(event.event_id, stamp):
                continue
            forwarded_ids.remember(event.event_id, event.ts)
            if stamp is None or event.ts > stamp:
                stamp = event.ts
        if stamp is not None and stamp != self._stream_time:
            self._stream_time = stamp
            forwarded_ids.forget_expired(stamp)
            outputs.extend(self._ticks(stamp, self.handoff.destinations()))
        outputs.extend(self._apply_handed())
        if batches:
            self._last_input = (self._stream_time, time.monotonic())
        return outputs

    def _latest_ts(self, wall_clock: float) -> int | None:
        max_future_ms = self.settings.max_future_ms
        return None if max_future_ms is None else int(wall_clock * 1000) + max_future_ms

    def _report_order_breaks(self, now: float) -> None:
        """Warn when input records left without waiting for every partition behind: the
        records of those partitions can then count as late (core/merge.py)."""
        merge = self._merge
        abandoned, forced = merge.take_order_breaks()
        if abandoned:
            log.warning(
                "input partitions %s: no fetch told their lag within %.0f s; the "
                "others' records wait for theirs (up to %d records)",
                sorted(abandoned),
                merge.max_wait_s,
                merge.max_buffered,
            )
        # Once a minute at most: an overflow lasts for many batches.
        self._forced_unreported += forced
        if self._forced_unreported and now - self._forced_reported_at >= 60:
            log.warning(
                "%d input records left before older ones of partitions still "
                "behind: more than %d waited for those",
                self._forced_unreported,
                merge.max_buffered,
            )
            self._forced_unreported, self._forced_reported_at = 0, now

    def take_rewinds(self) -> dict[tuple[str, int], int]:
        """The input partitions whose last batch was not taken, and where to read again."""
        rewinds, self._rewinds = self._rewinds, {}
        return rewinds

    @property
    def waiting_inputs(self) -> int:
        """Input records read but not forwarded yet (see validate)."""
        return len(self._merge)

    def input_positions(self) -> dict[tuple[str, int], int]:
        """Per input partition, the offset to commit once the forwarded outputs are flushed."""
        return self._merge.positions()

    def _ticks(self, stream_time: int, handed: Container[int] = ()) -> list[Output]:
        """Ticks for every events-by-customer partition: handed over in process to those
        that `handed` names (after their items, in the state persisted with them, so that
        no tick is durable before the items it passed), produced to the others."""
        # Ticks carry no source offset of their own: the receiving stage never skips them.
        marker = encode_forwarded(tick("", -1, -1, stream_time))
        outputs = []
        for events_partition in range(self.settings.partitions):
            if events_partition in handed:
                self._handed.setdefault(events_partition, []).append(marker)
            else:
                outputs.append(
                    Output(self.settings.topic_events, None, marker, partition=events_partition)
                )
        return outputs

    def idle_ticks(self, now: float) -> list[Output]:
        """With UPSELL_IDLE_ADVANCE: once no input arrived for that long, stream time
        moves with the wall clock, so that the windows of a quiet stream close."""
        idle_ms = self.settings.idle_advance_ms
        if self.waiting_inputs:
            return []  # records held for event-time order are input, not silence
        base, since = self._last_input
        if base is None:
            base = max(
                (p.stream_time for p in self.partitions.values() if p.stream_time is not None),
                default=None,
            )
        if idle_ms is None or base is None:
            return []
        advanced = base + int((now - since) * 1000) - idle_ms
        if self._stream_time is not None and advanced <= self._stream_time:
            return []
        self._stream_time = advanced
        return self._ticks(advanced)

    def _reject(
        self, topic: str, partition: int, record: Record, error: InvalidEvent
    ) -> list[Output]:
        counted = encode_forwarded(
            Forwarded(topic, partition, record.offset, None, reject_reason=error.reason)
        )
        dead_letter = self._dead_letter(topic, partition, record, error)
        counted_in = self._reject_partition(topic, partition)
        if self.handoff.destination((topic, partition), counted_in) is not None:
            self._handed.setdefault(counted_in, []).append(counted)
            return [dead_letter]
        return [
            dead_letter,
            Output(self.settings.topic_events, None, counted, partition=counted_in),
        ]

    def _dead_letter(
        self, topic: str, partition: int, record: Record, error: InvalidEvent
    ) -> Output:
        headers = [
            ("source_topic", topic.encode()),
            ("source_partition", str(partition).encode()),
            ("source_offset", str(record.offset).encode()),
            ("reason", error.reason.encode()),
            ("detail", error.detail.encode("utf-8", "replace")[:1000]),
        ]
        return Output(self.settings.topic_deadletter, record.key, record.value, headers=headers)

    def _reject_partition(self, topic: str, partition: int) -> int:
        # All rejects of one source partition go to one place, in order, so that the
        # attributing stage can count them once by source offset.
        return zlib.crc32(f"{topic}|{partition}".encode()) % self.settings.partitions

    def load(self, topic: str, partition: int) -> None:
        """Rebuild a newly assigned partition's state from its recovered table entries."""
        self.touch()
        if topic == self.settings.topic_events:
            self._partition(partition)
        elif topic == self.settings.topic_partials:
            self._board(partition)

    def has_state(self, topic: str, partition: int) -> bool:
        """Whether the state of an internal partition is loaded (see `load`)."""
        if topic == self.settings.topic_events:
            return partition in self.partitions
        return topic == self.settings.topic_partials and partition in self.boards

    def _partition(self, partition: int) -> CustomerPartition:
        state = self.partitions.get(partition)
        if state is None:
            state = CustomerPartition.restore(self.config, self._partition_store.load(partition))
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

    def _board(self, partition: int) -> RatesBoard:
        board = self.boards.get(partition)
        if board is None:
            entries = self._board_store.load(partition)
            board = RatesBoard.restore(self.config, self.settings.partitions, entries)
            self.boards[partition] = board
            self.detectors[partition] = DropDetector.restore(self.settings.drops, entries)
        return board

    # -- stage 2 ---------------------------------------------------------------------
    def attribute(self, partition: int, records: Sequence[Record]) -> list[Output]:
        self.touch()
        state = self._partition(partition)
        state.apply_records(records)  # decoded and applied in the compiled core
        return self._partials(partition, state)

    def _apply_handed(self) -> list[Output]:
        """Apply the items validate handed over in process (stream_app/handoff.py)."""
        outputs: list[Output] = []
        for partition, items in self._handed.items():
            state = self._partition(partition)
            state.apply_handed(items)
            outputs.extend(self._partials(partition, state))
            self.handed_partitions.add(partition)
        self._handed = {}
        return outputs

    def _partials(self, partition: int, state: CustomerPartition) -> list[Output]:
        # Only the last message moves the board's stream time: the board judges a
        # message's partials by the stream time before it, and this batch's partials
        # belong to windows that were not final before this batch.
        return [
            Output(self.settings.topic_partials, None, message, partition=0)
            for message in state.take_partials_encoded(partition, _PARTIALS_PER_MESSAGE)
        ]

    def persist_partition(self, partition: int) -> None:
        state = self.partitions.get(partition)
        if state is not None:
            self._partition_store.write(partition, state.take_changes())

    # -- stage 3 ---------------------------------------------------------------------
    def publish(self, partition: int, records: Sequence[Record]) -> list[Output]:
        self.touch()
        board = self._board(partition)
        for record in records:
            if record.value is not None:
                source, stream_time, partials = decode_partials(record.value)
                board.apply(source, stream_time, partials, record.offset)
        now_ms = int(time.time() * 1000)
        # Before take_records, which forgets the windows that became final.
        taken = self.detectors[partition].take_alerts(board)
        for alert in taken:
            if alert.state == FIRED:
                self._fired_alerts[(alert.label, alert.key)] = (alert, now_ms)
            else:
                self._fired_alerts.pop((alert.label, alert.key), None)
        alerts = [
            Output(
                self.settings.topic_alerts, alert.topic_key.encode(), dumps(alert.as_json(now_ms))
            )
            for alert in taken
        ]
        return [
            Output(
                self.settings.topic_rates
                if record.view is CHANNEL_SEGMENT
                else self.settings.topic_kpis,
                record.topic_key.encode(),
                dumps(record.as_json(self.bands, now_ms)),
            )
            for record in board.take_records()
        ] + alerts

    def active_alerts(self) -> list[ActiveAlert]:
        """Every rate-drop alert that fired and has not resolved, by window, then key."""
        active = []
        for detector in list(self.detectors.values()):
            for label, key, firing in detector.active():
                if firing:
                    fired, fired_at_ms = self._fired_alerts.get((label, key), (None, None))
                    active.append(ActiveAlert(label, key, fired, fired_at_ms))
        return active

    def persist_board(self, partition: int) -> None:
        board = self.boards.get(partition)
        if board is not None:
            self._board_store.write(
                partition, {**board.take_changes(), **self.detectors[partition].take_changes()}
            )

    def persist(self, topic: str, partition: int) -> None:
        if topic == self.settings.topic_events:
            self.persist_partition(partition)
        elif topic == self.settings.topic_partials:
            self.persist_board(partition)
