"""Stage 1, validate: input topics -> dead-letter topic (rejects) + events-by-customer.

Valid events leave in event-time order, re-keyed by customer_id, each stamped with the
stream time so far; a reject is copied unchanged to the dead-letter topic and counted by a
marker sent to one events-by-customer partition.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from collections.abc import Container, Iterable, Mapping, Sequence

from stream_app._engine import Accepted, forward_released
from stream_app.domain.dedupe import EventIdMemory
from stream_app.domain.events import InvalidEvent, validate_batch
from stream_app.domain.forwarding import Forwarded, encode_forwarded, tick
from stream_app.domain.merge import EventTimeMerge
from stream_app.settings import Settings
from stream_app.stages.handoff import HandedItem, Handoff, Source
from stream_app.stages.messages import Now, Output, Record

log = logging.getLogger(__name__)

# Input records held back for event-time order (domain/merge.py): room for a few fetches
# of every input partition (a fetch brings up to 1 MB, some 5,000 records, of each), about
# 0.5 KB each; and how long a partition whose lag is unknown holds the others before
# that is reported (it holds them until a fetch tells its lag).
_MAX_WAITING_INPUTS = 200_000
_MAX_INPUT_WAIT_S = 10.0


class ValidateStage:
    """Unlike the other stages, takes a whole fetch of every input partition at once: the
    records of all of them are merged into one event-time order."""

    def __init__(self, settings: Settings, started_at: float) -> None:
        self.settings = settings
        # Per input topic: whether it carries offers (else purchases).
        self._carries_offers: dict[str, bool] = {
            settings.topic_offers: True,
            settings.topic_purchases: False,
        }
        # Which items skip the events-by-customer topic (stages/handoff.py), and those
        # items per events-by-customer partition until `take_handed`.
        self.handoff = Handoff(settings.partitions)
        self._handed: dict[int, list[HandedItem]] = {}
        # Input partitions to read again from an offset, and drop the batch of.
        self._rewinds: dict[Source, int] = {}
        # The largest ts of the events this worker forwarded that were not duplicates:
        # the stamp of what it forwards next.
        self._stream_time: int | None = None
        # The event_ids forwarded, so that a duplicate does not move the stamp (the
        # attributing stage decides what counts as a duplicate; this only keeps a
        # duplicate's ts out of stream time).
        self._forwarded_ids = EventIdMemory(settings.attribution_window_ms)
        # UPSELL_IDLE_ADVANCE: stream time and the monotonic clock when the last input arrived.
        self._last_input: tuple[int | None, float] = (None, started_at)
        self.events_in = 0
        # Input records waiting for the other input partitions to catch up.
        self._merge: EventTimeMerge[Accepted | tuple[Record, InvalidEvent]] = EventTimeMerge(
            max_buffered=_MAX_WAITING_INPUTS,
            max_wait_s=_MAX_INPUT_WAIT_S,
        )
        # The same by input topic, for the throughput metric.
        self.events_in_by_topic: Counter[str] = Counter()
        # Records that left the merge early because too many waited, not logged yet.
        self._forced_unreported = 0
        self._forced_reported_at = float("-inf")

    def is_input(self, topic: str) -> bool:
        return topic in self._carries_offers

    def forget_waiting_inputs(self, revoked: Iterable[Source]) -> None:
        """A rebalance began: input records held for event-time order were not committed,
        and whoever owns their partitions next reads them again from the committed offset
        (see EventTimeMerge.rewind)."""
        sources = {
            (topic, partition) for topic, partition in revoked if topic in self._carries_offers
        }
        for source in sources:
            self._merge.rewind(source)
        self.handoff.forget(sources)

    def keep_only(self, owned: Container[Source]) -> None:
        """A rebalance ended: forget the input partitions not assigned any more."""
        for source in self._merge.sources():
            if source not in owned:
                self._merge.forget(source)

    def handle(
        self,
        batches: dict[Source, Sequence[Record]],
        now: Now,
        behind: Mapping[Source, bool | None] | None = None,
        quiet: Container[Source] = (),
    ) -> list[Output]:
        """Validate input records and forward what may leave, in event-time order.

        Records wait in an EventTimeMerge (domain/merge.py) until no input partition that is
        still `behind` (records in Kafka not read yet) can deliver an older one, so that a
        backlog read a few partitions at a time does not push stream time ahead of the
        others; a caught-up partition holds the others at its last record until a fetch of
        it answers with nothing new (`quiet`), however long that takes. Without `behind`,
        all records leave at once. Each source partition's items leave in offset order,
        rejects included: the receiving stage counts an item once by its source offset.
        Commit `input_positions()` once the outputs are flushed. A batch that would skip
        records after a rebalance is not taken: seek its partition to the offset
        `take_rewinds` names. `now.wall` bounds the ts accepted (UPSELL_MAX_FUTURE).
        """
        settings = self.settings
        merge = self._merge
        latest_ts = self._latest_ts(now.wall)
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
            outcomes = validate_batch(
                [record.value for record in records],
                self._carries_offers[topic],
                latest_ts,
                settings.partitions,
            )
            # A reject keeps its record: the dead-letter copy is the original.
            merge.add_validated(source, records, outcomes)
            self.events_in += len(records)
            self.events_in_by_topic[topic] += len(records)
        if behind is None:
            behind = {}  # nothing to wait for
        outputs, stamp = forward_released(
            merge,
            behind,
            now.monotonic,
            quiet,
            self._stream_time,
            self._forwarded_ids,
            self.handoff.handed_partitions(),
            settings.topic_events,
            Output,
            self._handed,
            self._reject,
        )
        self._report_order_breaks(now.monotonic)
        if stamp is not None and stamp != self._stream_time:
            self._stream_time = stamp
            self._forwarded_ids.forget_expired(stamp)
            outputs.extend(self._ticks(stamp, self.handoff.destinations()))
        if batches:
            self._last_input = (self._stream_time, now.monotonic)
        return outputs

    def _latest_ts(self, wall_clock: float) -> int | None:
        max_future_ms = self.settings.max_future_ms
        return None if max_future_ms is None else int(wall_clock * 1000) + max_future_ms

    def _report_order_breaks(self, now: float) -> None:
        """Warn when input records left without waiting for every partition behind: the
        records of those partitions can then count as late (domain/merge.py)."""
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

    def take_rewinds(self) -> dict[Source, int]:
        """The input partitions whose last batch was not taken, and where to read again."""
        rewinds, self._rewinds = self._rewinds, {}
        return rewinds

    @property
    def waiting_inputs(self) -> int:
        """Input records read but not forwarded yet (see handle)."""
        return len(self._merge)

    def input_positions(self) -> dict[Source, int]:
        """Per input partition, the offset to commit once the forwarded outputs are flushed."""
        return self._merge.positions()

    def take_handed(self) -> dict[int, list[HandedItem]]:
        """The items `handle` handed over in process since the last call, per
        events-by-customer partition in order: apply them before the outputs are flushed
        (AttributeStage.apply_handed) and persist that state before the input commit."""
        handed, self._handed = self._handed, {}
        return handed

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

    def idle_ticks(self, now: float, restored_stream_time: int | None) -> list[Output]:
        """With UPSELL_IDLE_ADVANCE: once no input arrived for that long, stream time
        moves with the (monotonic) clock, so that the windows of a quiet stream close.
        `restored_stream_time` is where it starts from before any input arrived."""
        idle_ms = self.settings.idle_advance_ms
        if self.waiting_inputs:
            return []  # records held for event-time order are input, not silence
        base, since = self._last_input
        if base is None:
            base = restored_stream_time
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
