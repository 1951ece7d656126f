"""The state of one partition of customers: dedupe, stream time, attribution, counts.

`CustomerPartition.apply` takes the items of the internal topic in log order and keeps
everything the contract counts: totals, the windows of every view, rejected, late and
duplicate events. After a batch, `take_partials` gives the window vectors that changed
(for the rates board) and `take_changes` the store entries to persist, with the input
offset they reflect. Results depend only on the order of the log, never on how it was cut
into batches, so a replay after a crash ends in the same state.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stream_app.core.attribution import Attribution, Conversion, OpenOffer
from stream_app.core.codec import event_from_row, event_to_row
from stream_app.core.cohorts import Partial, WindowCounts, WindowKey
from stream_app.core.dedupe import EventIdMemory
from stream_app.core.events import Offer, Purchase
from stream_app.core.fastjson import dumps_key
from stream_app.core.forwarding import Forwarded
from stream_app.core.labels import DEFAULT_MAX_LABEL_VALUES, LabelCap
from stream_app.core.views import CAMPAIGN, CHANNEL_SEGMENT, OFFER_VIEWS, PURCHASES, Key, View
from stream_app.core.views import dimension as dim
from stream_app.core.views import loyalty as loyalty_of
from stream_app.core.windows import is_closed, is_final, window_start

META_KEY = "m"
_DEDUPE = "e|"
_OFFER = "o|"
_PENDING = "p|"
_UNDECIDED = "k|"
_WINDOW = "w|"
_LABEL = "l|"

UPSELL = "upsell"
OTHER = "other"
# What a purchase of each kind counts in the purchases view: its two sums, its distinct
# buyers.
_PURCHASE_FIELDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    kind: (f"{kind}_purchases", f"{kind}_amount_micros",
           ("buyers_any", "buyers_upsell") if kind == UPSELL else ("buyers_any",))
    for kind in (UPSELL, OTHER)
}
_ONE_OFFER = (("offers", 1),)
_TARGETED = ("customers_targeted",)
_UPSOLD = ("customers_upsold",)


@dataclass(frozen=True, slots=True)
class WindowConfig:
    sizes: tuple[tuple[str, int], ...]
    attribution_ms: int
    grace_ms: int
    # UPSELL_MAX_LABEL_VALUES: values admitted per dimension and partition (labels.py).
    max_label_values: int = DEFAULT_MAX_LABEL_VALUES

    _size_by_label: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Looked up several times per event.
        object.__setattr__(self, "_size_by_label", dict(self.sizes))

    def size_ms(self, label: str) -> int:
        return self._size_by_label[label]

    def is_final(self, window: WindowKey, stream_time: int | None) -> bool:
        end = window[1] + self.size_ms(window[0])
        return is_final(end, stream_time, self.grace_ms, self.attribution_ms)


# Totals: counters since the start of the stream, by name, each keyed by label values.
OFFERS_TOTAL = "offers"  # (channel, segment)
CONVERSIONS_TOTAL = "conversions"
REVENUE_TOTAL = "revenue_micros"
CAMPAIGN_OFFERS_TOTAL = "campaign_offers"  # (campaign_type, product_line)
CAMPAIGN_CONVERSIONS_TOTAL = "campaign_conversions"
CAMPAIGN_REVENUE_TOTAL = "campaign_revenue_micros"
PURCHASES_TOTAL = "purchases"  # (kind, loyalty, product_line)
PURCHASE_AMOUNT_TOTAL = "purchase_amount_micros"
REJECTED_TOTAL = "rejected"  # (topic, reason)
LATE_TOTAL = "late"  # (topic,)
DUPLICATES_TOTAL = "duplicates"  # (topic,)
LABEL_OVERFLOW_TOTAL = "label_overflow"  # (dimension,)
TOTALS = (OFFERS_TOTAL, CONVERSIONS_TOTAL, REVENUE_TOTAL, CAMPAIGN_OFFERS_TOTAL,
          CAMPAIGN_CONVERSIONS_TOTAL, CAMPAIGN_REVENUE_TOTAL, PURCHASES_TOTAL,
          PURCHASE_AMOUNT_TOTAL, REJECTED_TOTAL, LATE_TOTAL, DUPLICATES_TOTAL,
          LABEL_OVERFLOW_TOTAL)


@dataclass(slots=True)
class Totals:
    counters: dict[str, Counter[tuple[str, ...]]] = field(
        default_factory=lambda: {name: Counter() for name in TOTALS})

    def __getitem__(self, name: str) -> Counter[tuple[str, ...]]:
        return self.counters[name]

    def add(self, other: Totals) -> None:
        for name, counter in other.counters.items():
            self.counters[name].update(counter)

    def as_row(self) -> dict[str, list[list[Any]]]:
        return {name: [[*key, n] for key, n in counter.items()]
                for name, counter in self.counters.items() if counter}

    @classmethod
    def from_row(cls, row: dict[str, list[list[Any]]]) -> Totals:
        totals = cls()
        for name, entries in row.items():
            totals.counters[name] = Counter({tuple(entry[:-1]): entry[-1] for entry in entries})
        return totals


def offer_key(view: View, offer: Offer) -> Key:
    if view is CHANNEL_SEGMENT:
        return (offer.channel, offer.segment)
    return (dim(offer.campaign_type), dim(offer.product_line))


def purchase_key(purchase: Purchase) -> Key:
    return (loyalty_of(purchase.loyalty_member), dim(purchase.product_line))


class CustomerPartition:
    def __init__(self, config: WindowConfig) -> None:
        self.config = config
        self.stream_time: int | None = None
        self.next_offset = 0
        self.totals = Totals()
        self._watermarks: dict[tuple[str, int], int] = {}
        self._memory = EventIdMemory(config.attribution_ms)
        self._attribution = Attribution(config.attribution_ms, config.grace_ms)
        self._counts = WindowCounts()
        self._labels = LabelCap(config.max_label_values, config.attribution_ms)
        # Purchases that name an offer not here yet and are not upsells by themselves:
        # whether they are upsell transactions waits on the offer; the window labels
        # they are counted in were fixed on arrival.
        self._undecided: dict[str, tuple[str, ...]] = {}
        self._changed_undecided: set[str] = set()
        self._remembered: set[str] = set()

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
            self.totals[REJECTED_TOTAL][(item.source_topic, item.reject_reason or "unknown")] += 1
            return
        self._advance(item.stamp)
        event = item.event
        if self._memory.is_duplicate(event.event_id, self.stream_time):
            self.totals[DUPLICATES_TOTAL][(item.source_topic,)] += 1
            return
        self._memory.remember(event.event_id, event.ts)
        self._remembered.add(event.event_id)
        # Before anything is counted: totals, windows and kept events see labels only.
        event, overflowed = self._labels.cap(event, self.stream_time)
        for dimension in overflowed:
            self.totals[LABEL_OVERFLOW_TOTAL][(dimension,)] += 1
        windows = self._open_windows(event.ts)
        if len(windows) < len(self.config.sizes):
            self.totals[LATE_TOTAL][(item.source_topic,)] += 1
        # What came due before this event is decided first, as if everything had arrived
        # in order, whether or not another event happened to arrive in between.
        self._advance(event.ts)
        if isinstance(event, Offer):
            self._present(event, windows)
        else:
            self._purchase(event, windows)
        # A purchase that arrived after its ts + grace is due at once: as of now.
        self._settle(self.stream_time)

    def _present(self, offer: Offer, windows: list[WindowKey]) -> None:
        self.totals[OFFERS_TOTAL][offer_key(CHANNEL_SEGMENT, offer)] += 1
        self.totals[CAMPAIGN_OFFERS_TOTAL][offer_key(CAMPAIGN, offer)] += 1
        for view in OFFER_VIEWS:
            key = offer_key(view, offer)
            for window in windows:
                self._counts.count(view, window, key, _ONE_OFFER, _TARGETED, offer.customer_id)
        labels = _shared_labels(label for label, _ in windows)
        self._count(self._attribution.add_offer(offer, labels), self.stream_time)

    def _purchase(self, purchase: Purchase, windows: list[WindowKey]) -> None:
        conversions = self._attribution.add_purchase(purchase)
        labels = _shared_labels(label for label, _ in windows)
        now = self.stream_time
        if purchase.is_upsell or conversions:
            self._count_purchase(purchase, labels, UPSELL, now)
        elif self._attribution.is_waiting(purchase):
            self._undecided[purchase.event_id] = labels
            self._changed_undecided.add(purchase.event_id)
        else:
            self._count_purchase(purchase, labels, OTHER, now)
        self._count(conversions, now)

    def _count_purchase(self, purchase: Purchase, labels: tuple[str, ...], kind: str,
                        decided_at: int | None) -> None:
        key = purchase_key(purchase)
        purchases, amount_micros, buyers = _PURCHASE_FIELDS[kind]
        self.totals[PURCHASES_TOTAL][(kind, *key)] += 1
        self.totals[PURCHASE_AMOUNT_TOTAL][(kind, *key)] += purchase.amount_micros
        for label in labels:
            window = (label, window_start(purchase.ts, self.config.size_ms(label)))
            if self.config.is_final(window, decided_at):
                continue
            self._counts.count(PURCHASES, window, key,
                               ((purchases, 1), (amount_micros, purchase.amount_micros)),
                               buyers, purchase.customer_id)

    def _count(self, conversions: Iterable[Conversion], decided_at: int | None) -> None:
        """Count conversions decided when stream time was `decided_at`: they change only
        the windows that were not final by then."""
        for conversion in conversions:
            offer = conversion.offer.offer
            purchase = conversion.purchase
            amount = purchase.amount_micros
            pair = offer_key(CHANNEL_SEGMENT, offer)
            campaign = offer_key(CAMPAIGN, offer)
            self.totals[CONVERSIONS_TOTAL][pair] += 1
            self.totals[REVENUE_TOTAL][pair] += amount
            self.totals[CAMPAIGN_CONVERSIONS_TOTAL][campaign] += 1
            self.totals[CAMPAIGN_REVENUE_TOTAL][campaign] += amount
            for label in conversion.offer.windows:
                window = (label, window_start(offer.ts, self.config.size_ms(label)))
                if self.config.is_final(window, decided_at):
                    continue
                for view in OFFER_VIEWS:
                    key = offer_key(view, offer)
                    self._counts.count(view, window, key,
                                       (("conversions", 1), ("revenue_micros", amount)),
                                       _UPSOLD, offer.customer_id)
            labels = self._undecided.pop(purchase.event_id, None)
            if labels is not None:
                self._changed_undecided.add(purchase.event_id)
                self._count_purchase(purchase, labels, UPSELL, decided_at)

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
        since, self.stream_time = self.stream_time, moment
        self._settle(since)

    def _settle(self, since: int | None) -> None:
        """Decide the last-touch purchases now due (one that arrived late is due at once)
        and count the purchases that gave up waiting for their offer as `other`.

        Stream time just moved from `since`: each decision is taken as of the stream time
        at which it fell due on the way, not as of where stream time ended, so a jump of
        hours counts a conversion in the windows that were not final yet when it was due.
        """
        now = self.stream_time
        for conversion in self._attribution.advance(now):
            self._count((conversion,), _due_moment(conversion.due, since, now))
        for given_up in self._attribution.take_given_up():
            labels = self._undecided.pop(given_up.purchase.event_id, None)
            if labels is not None:
                self._changed_undecided.add(given_up.purchase.event_id)
                self._count_purchase(given_up.purchase, labels, OTHER,
                                     _due_moment(given_up.due, since, now))

    # -- reading ---------------------------------------------------------------------
    def window_vectors(self, view: View, window: WindowKey) -> dict[Key, list[int]]:
        return self._counts.cells(view, window)

    def open_offers(self) -> int:
        return len(self._attribution)

    # -- after a batch ---------------------------------------------------------------
    def take_partials(self) -> list[Partial]:
        return self._counts.take_partials()

    def take_changes(self) -> dict[str, Any]:
        """Store entries changed since the last call (None deletes), and forget expired state."""
        self._forget_expired()
        changes: dict[str, Any] = {}
        for event_id in self._remembered:
            changes[_DEDUPE + event_id] = self._memory.ts_of(event_id)
        self._remembered.clear()
        attribution_changes = self._attribution.changes
        for ref in attribution_changes.offers:
            kept = self._attribution.offer(ref)
            entry = _OFFER + dumps_key(ref)
            changes[entry] = None if kept is None else _offer_row(kept)
        for event_id in attribution_changes.purchases:
            purchase = self._attribution.pending_purchase(event_id)
            changes[_PENDING + event_id] = None if purchase is None else event_to_row(purchase)
        attribution_changes.offers.clear()
        attribution_changes.purchases.clear()
        for event_id in self._changed_undecided:
            labels = self._undecided.get(event_id)
            changes[_UNDECIDED + event_id] = None if labels is None else list(labels)
        self._changed_undecided.clear()
        changes.update(self._counts.take_changes(_WINDOW))
        self._labels.forget_unused(self.stream_time)
        for dimension, value, last_use in self._labels.take_changes():
            changes[_label_key(dimension, value)] = last_use
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
        for view_name, window in list(self._counts.windows()):
            if self.config.is_final(window, self.stream_time):
                self._counts.drop(view_name, window)

    # -- restore ---------------------------------------------------------------------
    @classmethod
    def restore(cls, config: WindowConfig, entries: dict[str, Any]) -> CustomerPartition:
        """Rebuild from the store entries that `take_changes` wrote."""
        partition = cls(config)
        labels: list[tuple[str, str, int]] = []
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
            elif key.startswith(_UNDECIDED):
                partition._undecided[key[len(_UNDECIDED) :]] = _shared_labels(value)
            elif key.startswith(_WINDOW):
                partition._counts.restore(key[len(_WINDOW) :], value)
            elif key.startswith(_LABEL):
                dimension, label = json.loads(key[len(_LABEL) :])
                labels.append((dimension, label, value))
        partition._labels.restore(labels)
        partition._remembered.clear()
        partition._counts.forget_changes()
        return partition

    def admitted_labels(self, dimension: str) -> frozenset[str]:
        return self._labels.admitted(dimension)


def _due_moment(due: int | None, since: int | None, now: int | None) -> int | None:
    """The stream time at which a decision due once stream time passes `due` was taken,
    for stream time that moved from `since` to `now` through every value in between."""
    if due is None or now is None:
        return now
    moment = due + 1
    if since is not None:
        moment = max(moment, since)
    return min(moment, now)


# Every kept offer and undecided purchase holds the labels of the windows it was counted
# in; there are only as many distinct tuples as subsets of the window sizes, so they are
# shared instead of one tuple per event (64 bytes per open offer).
_LABEL_TUPLES: dict[tuple[str, ...], tuple[str, ...]] = {}


def _shared_labels(labels: Iterable[str]) -> tuple[str, ...]:
    made = tuple(labels)
    return _LABEL_TUPLES.setdefault(made, made)


def _label_key(dimension: str, value: str) -> str:
    # A JSON list, so that any character may appear in the value; the entry holds the
    # value's recorded last use (labels.py), and is deleted when the value leaves.
    return _LABEL + dumps_key([dimension, value])


def _offer_row(kept: OpenOffer) -> list[Any]:
    return [event_to_row(kept.offer), list(kept.windows), kept.converted_by]


def _offer_from_row(row: list[Any]) -> OpenOffer:
    offer = event_from_row(row[0])
    assert isinstance(offer, Offer)
    return OpenOffer(offer, _shared_labels(row[1]), row[2])
