"""The state of one partition of customers: dedupe, stream time, attribution, counts.

`CustomerPartition.apply` takes the items of the internal topic in log order and keeps
everything the contract counts: totals per (channel, segment), cohort windows, rejected,
late and duplicate events. After a batch, `take_changes` gives the store entries to
persist (with the input offset they reflect) and `take_partials` the window counts that
changed, for the rates board. Results depend only on the order of the log, never on how
it was cut into batches, so a replay after a crash ends in the same state.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from stream_app.core.attribution import Attribution, Conversion, OpenOffer
from stream_app.core.codec import event_from_row, event_to_row
from stream_app.core.cohorts import CohortCounts, CohortTable, Pair, WindowKey
from stream_app.core.dedupe import EventIdMemory
from stream_app.core.events import Offer, Purchase
from stream_app.core.forwarding import Forwarded
from stream_app.core.windows import is_closed, is_final, window_start

META_KEY = "m"
_DEDUPE = "e|"
_OFFER = "o|"
_PENDING = "p|"
_WINDOW = "w|"


@dataclass(frozen=True, slots=True)
class WindowConfig:
    sizes: tuple[tuple[str, int], ...]
    attribution_ms: int
    grace_ms: int

    def size_ms(self, label: str) -> int:
        return dict(self.sizes)[label]


@dataclass(slots=True)
class Totals:
    """Counters since the beginning of the stream (what the *_total metrics export)."""

    offers: Counter[Pair] = field(default_factory=Counter)
    conversions: Counter[Pair] = field(default_factory=Counter)
    revenue_micros: Counter[Pair] = field(default_factory=Counter)
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)
    late: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)

    def as_row(self) -> list[Any]:
        return [
            [[*pair, n] for pair, n in self.offers.items()],
            [[*pair, n] for pair, n in self.conversions.items()],
            [[*pair, n] for pair, n in self.revenue_micros.items()],
            [[*key, n] for key, n in self.rejected.items()],
            list(self.late.items()),
            list(self.duplicates.items()),
        ]

    @classmethod
    def from_row(cls, row: list[Any]) -> Totals:
        offers, conversions, revenue, rejected, late, duplicates = row
        return cls(
            Counter({(a, b): n for a, b, n in offers}),
            Counter({(a, b): n for a, b, n in conversions}),
            Counter({(a, b): n for a, b, n in revenue}),
            Counter({(a, b): n for a, b, n in rejected}),
            Counter(dict(late)),
            Counter(dict(duplicates)),
        )


@dataclass(frozen=True, slots=True)
class Partial:
    """One partition's current counts of one key in one window."""

    label: str
    start: int
    channel: str
    segment: str
    counts: CohortCounts


class CustomerPartition:
    def __init__(self, config: WindowConfig) -> None:
        self.config = config
        self.stream_time: int | None = None
        self.next_offset = 0
        self.totals = Totals()
        self._watermarks: dict[tuple[str, int], int] = {}
        self._memory = EventIdMemory(config.attribution_ms)
        self._attribution = Attribution(config.attribution_ms, config.grace_ms)
        self._cohorts = CohortTable()
        self._remembered: set[str] = set()
        self._dropped_windows: set[WindowKey] = set()

    # -- processing ------------------------------------------------------------------
    def apply(self, item: Forwarded, offset: int) -> None:
        """Apply one item of the internal topic read at `offset`."""
        if offset < self.next_offset:
            return
        self.next_offset = offset + 1
        if item.is_tick:
            self._advance(item.stamp)
            return
        source = (item.source_topic, item.source_partition)
        if item.source_offset <= self._watermarks.get(source, -1):
            return  # the validating stage sent this again after a restart
        self._watermarks[source] = item.source_offset
        if item.event is None:
            self.totals.rejected[(item.source_topic, item.reject_reason or "unknown")] += 1
            return
        self._advance(item.stamp)
        event = item.event
        if self._memory.is_duplicate(event.event_id, self.stream_time):
            self.totals.duplicates[item.source_topic] += 1
            return
        self._memory.remember(event.event_id, event.ts)
        self._remembered.add(event.event_id)
        open_windows = self._open_windows(event.ts)
        if len(open_windows) < len(self.config.sizes):
            self.totals.late[item.source_topic] += 1
        if isinstance(event, Offer):
            self._present(event, open_windows)
        else:
            self._purchase(event)
        self._advance(event.ts)

    def _present(self, offer: Offer, open_windows: list[WindowKey]) -> None:
        pair = (offer.channel, offer.segment)
        self.totals.offers[pair] += 1
        for window in open_windows:
            self._cohorts.add_offer(window, pair)
        labels = tuple(label for label, _ in open_windows)
        self._count(self._attribution.add_offer(offer, labels, self.stream_time))

    def _purchase(self, purchase: Purchase) -> None:
        self._count(self._attribution.add_purchase(purchase, self.stream_time))

    def _count(self, conversions: list[Conversion]) -> None:
        for conversion in conversions:
            offer = conversion.offer.offer
            amount = conversion.purchase.amount_micros
            pair = (offer.channel, offer.segment)
            self.totals.conversions[pair] += 1
            self.totals.revenue_micros[pair] += amount
            for label in conversion.offer.windows:
                size = self.config.size_ms(label)
                start = window_start(offer.ts, size)
                if not is_final(
                    start + size, self.stream_time, self.config.grace_ms, self.config.attribution_ms
                ):
                    self._cohorts.add_conversion((label, start), pair, amount)

    def _open_windows(self, ts: int) -> list[WindowKey]:
        windows = []
        for label, size in self.config.sizes:
            start = window_start(ts, size)
            if not is_closed(start + size, self.stream_time, self.config.grace_ms):
                windows.append((label, start))
        return windows

    def _advance(self, moment: int | None) -> None:
        if moment is None or (self.stream_time is not None and moment <= self.stream_time):
            return
        self.stream_time = moment
        self._count(self._attribution.advance(moment))

    # -- reading ---------------------------------------------------------------------
    def window_counts(self) -> dict[WindowKey, dict[Pair, CohortCounts]]:
        return self._cohorts.windows

    def open_offers(self) -> int:
        return len(self._attribution)

    # -- after a batch ---------------------------------------------------------------
    def take_partials(self) -> list[Partial]:
        partials = [
            Partial(window[0], window[1], pair[0], pair[1], self._cohorts.counts(window, pair))
            for window, pair in sorted(self._cohorts.changed)
            if window in self._cohorts.windows
        ]
        return partials

    def take_changes(self) -> dict[str, Any]:
        """Store entries changed since the last call (None deletes), and forget expired state."""
        self._forget_expired()
        changes: dict[str, Any] = {}
        for event_id in self._remembered:
            changes[_DEDUPE + event_id] = self._memory.ts_of(event_id)
        self._remembered.clear()
        attribution_changes = self._attribution.changes
        for offer_id in attribution_changes.offers:
            kept = self._attribution.offer(offer_id)
            changes[_OFFER + offer_id] = None if kept is None else _offer_row(kept)
        pending = {p.event_id: p for p in self._attribution.pending_purchases()}
        for event_id in attribution_changes.purchases:
            purchase = pending.get(event_id)
            changes[_PENDING + event_id] = None if purchase is None else event_to_row(purchase)
        attribution_changes.offers.clear()
        attribution_changes.purchases.clear()
        for window in {window for window, _ in self._cohorts.changed} | self._dropped_windows:
            by_pair = self._cohorts.windows.get(window)
            changes[f"{_WINDOW}{window[0]}|{window[1]}"] = (
                None
                if by_pair is None
                else [[*pair, *counts.as_row()] for pair, counts in by_pair.items()]
            )
        self._cohorts.changed.clear()
        self._dropped_windows.clear()
        changes[META_KEY] = [
            self.next_offset,
            self.stream_time,
            [[topic, partition, offset] for (topic, partition), offset in self._watermarks.items()],
            self.totals.as_row(),
        ]
        return changes

    def _forget_expired(self) -> None:
        if self.stream_time is None:
            return
        self._remembered.update(self._memory.forget_expired(self.stream_time))
        self._attribution.forget_expired(self.stream_time)
        config = self.config
        for window in list(self._cohorts.windows):
            size = config.size_ms(window[0])
            if is_final(window[1] + size, self.stream_time, config.grace_ms, config.attribution_ms):
                self._cohorts.drop(window)
                self._dropped_windows.add(window)

    # -- restore ---------------------------------------------------------------------
    @classmethod
    def restore(cls, config: WindowConfig, entries: dict[str, Any]) -> CustomerPartition:
        """Rebuild from the store entries that `take_changes` wrote."""
        partition = cls(config)
        meta = entries.get(META_KEY)
        if meta is not None:
            partition.next_offset, partition.stream_time, watermarks, totals = meta
            partition._watermarks = {(t, p): o for t, p, o in watermarks}
            partition.totals = Totals.from_row(totals)
        for key, value in entries.items():
            if value is None:
                continue
            if key.startswith(_DEDUPE):
                partition._memory.remember(key[len(_DEDUPE) :], value)
            elif key.startswith(_OFFER):
                partition._attribution.restore_offer(_offer_from_row(value))
            elif key.startswith(_PENDING):
                restored = event_from_row(value)
                assert isinstance(restored, Purchase)
                partition._attribution.restore_pending(restored)
            elif key.startswith(_WINDOW):
                label, start = key[len(_WINDOW) :].rsplit("|", 1)
                partition._cohorts.windows[(label, int(start))] = {
                    (channel, segment): CohortCounts(offers, conversions, revenue)
                    for channel, segment, offers, conversions, revenue in value
                }
        partition._remembered.clear()
        return partition


def _offer_row(kept: OpenOffer) -> list[Any]:
    return [event_to_row(kept.offer), list(kept.windows), kept.converted_by]


def _offer_from_row(row: list[Any]) -> OpenOffer:
    offer = event_from_row(row[0])
    assert isinstance(offer, Offer)
    return OpenOffer(offer, tuple(row[1]), row[2])
