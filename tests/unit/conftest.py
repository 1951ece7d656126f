"""Builders shared by the core tests: events, a driver for CustomerPartition, snapshots,
and a reference model of what an on-time scenario must count.

The driver feeds a partition the way the attributing stage does: every item goes through
encode_forwarded/decode_forwarded (the internal topic's wire format), log offsets count up
from 0, and each source topic's offsets count up in the order its items are sent.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from stream_app.domain.events import Event, Offer, Purchase
from stream_app.domain.forwarding import Forwarded, decode_forwarded, encode_forwarded
from stream_app.domain.partition import CustomerPartition
from stream_app.domain.totals import (
    CAMPAIGN_CONVERSIONS_TOTAL,
    CAMPAIGN_OFFERS_TOTAL,
    CAMPAIGN_REVENUE_TOTAL,
    CONVERSIONS_TOTAL,
    DUPLICATES_TOTAL,
    OFFERS_TOTAL,
    PURCHASE_AMOUNT_TOTAL,
    PURCHASES_TOTAL,
    REVENUE_TOTAL,
    TOTALS,
    Totals,
)
from stream_app.domain.views import (
    CAMPAIGN,
    CHANNEL_SEGMENT,
    OFFER_VIEWS,
    VIEWS,
    Key,
    offer_key,
    purchase_key,
    rollups,
)
from stream_app.domain.views import PURCHASES as PURCHASES_VIEW
from stream_app.domain.window_config import WindowConfig
from stream_app.domain.windows import window_start

OFFERS_TOPIC = "upsell.offers"
PURCHASES_TOPIC = "upsell.purchases"

SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

# 2026-11-22T00:00:00Z: a multiple of every window size used here.
T0 = 1_795_305_600_000

SIZES: tuple[tuple[str, int], ...] = (("5m", 5 * MINUTE), ("1h", HOUR))
CONFIG = WindowConfig(sizes=SIZES, attribution_ms=7 * DAY, grace_ms=MINUTE)


def offer(
    event_id: str,
    customer: str,
    ts: int,
    *,
    offer_id: str | None = None,
    channel: str = "email",
    segment: str = "smb",
    campaign_type: str | None = None,
    product_line: str | None = None,
) -> Offer:
    return Offer(
        event_id=event_id,
        offer_id=offer_id if offer_id is not None else f"offer-{event_id}",
        customer_id=customer,
        channel=channel,
        segment=segment,
        ts=ts,
        campaign_type=campaign_type,
        product_line=product_line,
    )


def purchase(
    event_id: str,
    customer: str,
    ts: int,
    *,
    amount_micros: int = 1_000_000,
    offer_id: str | None = None,
    is_upsell: bool | None = None,
    product_line: str | None = None,
    loyalty_member: bool | None = None,
) -> Purchase:
    return Purchase(
        event_id=event_id,
        order_id=f"order-{event_id}",
        customer_id=customer,
        ts=ts,
        amount_micros=amount_micros,
        offer_id=offer_id,
        is_upsell=(offer_id is not None) if is_upsell is None else is_upsell,
        product_line=product_line,
        loyalty_member=loyalty_member,
    )


def topic_of(event: Event) -> str:
    return OFFERS_TOPIC if isinstance(event, Offer) else PURCHASES_TOPIC


class Feed:
    """One internal-topic partition feeding one CustomerPartition."""

    def __init__(self, partition: CustomerPartition) -> None:
        self.partition = partition
        self.offset = 0
        self._source_offsets: dict[tuple[str, int], int] = {}
        self.log: list[tuple[Forwarded, int]] = []

    def _source_offset(self, topic: str, source_partition: int) -> int:
        key = (topic, source_partition)
        offset = self._source_offsets.get(key, 0)
        self._source_offsets[key] = offset + 1
        return offset

    def send(
        self,
        event: Event,
        *,
        stamp: int | None = None,
        topic: str | None = None,
        source_partition: int = 0,
    ) -> Forwarded:
        topic = topic or topic_of(event)
        item = Forwarded(
            topic, source_partition, self._source_offset(topic, source_partition), stamp, event
        )
        self.deliver(item)
        return item

    def send_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.send(event)

    def reject(self, topic: str, reason: str, *, source_partition: int = 0) -> Forwarded:
        item = Forwarded(
            topic,
            source_partition,
            self._source_offset(topic, source_partition),
            None,
            reject_reason=reason,
        )
        self.deliver(item)
        return item

    def tick(self, stamp: int, topic: str = OFFERS_TOPIC) -> Forwarded:
        item = Forwarded(topic, 0, 0, stamp)
        self.deliver(item)
        return item

    def deliver(self, item: Forwarded, offset: int | None = None) -> None:
        """Apply at `offset` (default: the next log offset) after a wire round trip."""
        if offset is None:
            offset = self.offset
        self.offset = max(self.offset, offset + 1)
        wired = decode_forwarded(encode_forwarded(item))
        assert wired == item
        self.log.append((item, offset))
        self.partition.apply(wired, offset)


def new_feed(config: WindowConfig = CONFIG) -> Feed:
    return Feed(CustomerPartition(config))


TotalsRows = dict[str, dict[tuple[str, ...], int]]
Slot = tuple[str, str, int]  # (view name, window label, window start)
WindowRows = dict[Slot, dict[Key, tuple[int, ...]]]


def totals_rows(totals: Totals) -> TotalsRows:
    """Every counter as a plain dict without zero entries."""
    return {name: {k: n for k, n in totals[name].items() if n} for name in TOTALS}


def window_rows(partition: CustomerPartition) -> WindowRows:
    """Every view's window vectors (key and roll-ups) the partition holds."""
    rows: WindowRows = {}
    for view_name, window in partition.windows():
        view = {v.name: v for v in VIEWS}[view_name]
        cells = partition.window_vectors(view, window)
        if cells:
            rows[(view_name, *window)] = {key: tuple(vector) for key, vector in cells.items()}
    return rows


def snapshot(partition: CustomerPartition) -> tuple[TotalsRows, WindowRows]:
    return totals_rows(partition.totals), window_rows(partition)


def vector(feed: Feed, label: str, start: int, key: Key, view: Any = CHANNEL_SEGMENT) -> list[int]:
    """One key's vector; [offers, conversions, revenue, targeted, upsold] for offer views."""
    return feed.partition.window_vectors(view, (label, start)).get(key, [])


def merge_store(store: dict[str, Any], changes: Mapping[str, Any]) -> None:
    """Apply take_changes output to a key-value store: None deletes."""
    for key, value in changes.items():
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value


def canonical_store(store: Mapping[str, Any]) -> dict[str, Any]:
    """The entries a partition's store holds, in one form whatever writes made them: the
    memberships added to a customer's window entry later (key [label, start, customer,
    write]) folded into it, in write order, and left out where no cell of the window is
    stored (the window was dropped); the rows of each such entry sorted. Values decoded."""
    entries: dict[str, Any] = {}
    added: list[tuple[list[Any], list[Any]]] = []
    windows_held: set[tuple[str, int]] = set()
    for key, value in store.items():
        if key.startswith("w|"):
            parts = json.loads(key[2:])
            if len(parts) == 4:
                added.append((parts, value))
                continue
            if len(parts) == 5:
                windows_held.add((parts[1], parts[2]))
        entries[key] = value
    for (label, start, customer, _), rows in sorted(added, key=lambda entry: entry[0][3]):
        if (label, start) in windows_held:
            key = "w|" + json.dumps([label, start, customer], separators=(",", ":"))
            entries[key] = [*entries.get(key, []), *rows]
    return {
        key: sorted(value) if key.startswith("w|") and len(json.loads(key[2:])) == 3 else value
        for key, value in entries.items()
    }


# -- reference model ------------------------------------------------------------------


def reference(
    offers: list[Offer],
    purchases: list[Purchase],
    duplicates: list[Event],
    config: WindowConfig,
) -> tuple[TotalsRows, WindowRows]:
    """What a partition must count for on-time events whose last-touch purchases are all
    decided after every explicit one (the grace covers the whole spread) and none of
    whose purchases gave up waiting yet. Offer ids are unique and no two purchases name
    the same offer. A purchase that names an offer that never arrives for its customer (an
    offer of another customer does not count) and is not an upsell by itself is not
    counted yet (its kind is not known)."""
    attribution = config.attribution_ms
    by_id = {o.offer_id: o for o in offers}
    converted: dict[str, Purchase] = {}

    def eligible(o: Offer, p: Purchase) -> bool:
        return (
            o.offer_id not in converted
            and o.customer_id == p.customer_id
            and 0 <= p.ts - o.ts <= attribution
        )

    for p in purchases:
        if p.offer_id in by_id and eligible(by_id[p.offer_id], p):
            converted[p.offer_id] = p
    for p in sorted(purchases, key=lambda p: (p.ts, p.event_id)):
        if p.is_last_touch:
            candidates = [o for o in offers if eligible(o, p)]
            if candidates:
                converted[max(candidates, key=lambda o: (o.ts, o.offer_id)).offer_id] = p
    converting = {p.event_id for p in converted.values()}

    totals: dict[str, Counter[tuple[str, ...]]] = {name: Counter() for name in TOTALS}
    sums: dict[Slot, dict[Key, list[int]]] = {}
    members: dict[Slot, dict[Key, list[set[str]]]] = {}

    def count(view: Any, ts: int, key: Key, field: str, amount: int, customer: str) -> None:
        for label, size in config.sizes:
            slot = (view.name, label, window_start(ts, size))
            for rolled in rollups(key):
                row = sums.setdefault(slot, {}).setdefault(rolled, [0] * len(view.sums))
                groups = members.setdefault(slot, {}).setdefault(
                    rolled, [set() for _ in view.distinct]
                )
                if field in view.sums:
                    row[view.sums.index(field)] += amount
                else:
                    groups[view.distinct.index(field)].add(customer)

    for o in offers:
        paid = converted.get(o.offer_id)
        pair, campaign = offer_key(CHANNEL_SEGMENT, o), offer_key(CAMPAIGN, o)
        totals[OFFERS_TOTAL][pair] += 1
        totals[CAMPAIGN_OFFERS_TOTAL][campaign] += 1
        if paid is not None:
            totals[CONVERSIONS_TOTAL][pair] += 1
            totals[REVENUE_TOTAL][pair] += paid.amount_micros
            totals[CAMPAIGN_CONVERSIONS_TOTAL][campaign] += 1
            totals[CAMPAIGN_REVENUE_TOTAL][campaign] += paid.amount_micros
        for view in OFFER_VIEWS:
            key = offer_key(view, o)
            count(view, o.ts, key, "offers", 1, o.customer_id)
            count(view, o.ts, key, "customers_targeted", 0, o.customer_id)
            if paid is not None:
                count(view, o.ts, key, "conversions", 1, o.customer_id)
                count(view, o.ts, key, "revenue_micros", paid.amount_micros, o.customer_id)
                count(view, o.ts, key, "customers_upsold", 0, o.customer_id)
    for p in purchases:
        if p.is_upsell or p.event_id in converting:
            kind = "upsell"
        elif p.offer_id is not None and (
            p.offer_id not in by_id or by_id[p.offer_id].customer_id != p.customer_id
        ):
            continue  # waits for its customer's offer, which never came: not decided yet
        else:
            kind = "other"
        key = purchase_key(p)
        totals[PURCHASES_TOTAL][(kind, *key)] += 1
        totals[PURCHASE_AMOUNT_TOTAL][(kind, *key)] += p.amount_micros
        count(PURCHASES_VIEW, p.ts, key, f"{kind}_purchases", 1, p.customer_id)
        count(PURCHASES_VIEW, p.ts, key, f"{kind}_amount_micros", p.amount_micros, p.customer_id)
        count(PURCHASES_VIEW, p.ts, key, "buyers_any", 0, p.customer_id)
        if kind == "upsell":
            count(PURCHASES_VIEW, p.ts, key, "buyers_upsell", 0, p.customer_id)
    for event in duplicates:
        totals[DUPLICATES_TOTAL][(topic_of(event),)] += 1
    rows: WindowRows = {
        slot: {
            key: (*row, *(len(group) for group in members[slot][key]))
            for key, row in by_key.items()
        }
        for slot, by_key in sums.items()
    }
    return {name: {k: n for k, n in c.items() if n} for name, c in totals.items()}, rows
