"""A reference model of one partition for any arrival order: late events, closed and final
windows, stream-time jumps and duplicates, written from the contract's words alone.

It keeps no indexes, heaps or change tracking: every decision searches plain lists, and
stream time walks forward one due moment at a time, so a decision is taken as of the
stream time at which it falls due. It imports nothing of the code under test but the
event classes and the view definitions (the names of the counted fields).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from stream_app.domain.events import Event, Offer, Purchase
from stream_app.domain.views import ALL, CAMPAIGN, CHANNEL_SEGMENT, PURCHASES, View

Tick = int  # a stream-time marker carrying no event
Arrival = Event | Tick
Slot = tuple[str, str, int]  # (view name, window label, window start)
Key = tuple[str, str]
Cell = tuple[Slot, Key]


@dataclass
class _KeptOffer:
    offer: Offer
    labels: list[str]
    converted: bool = False


@dataclass
class _Waiting:
    purchase: Purchase
    labels: list[str]


@dataclass
class ReplayResult:
    """Totals by counter name, and every window cell's last figures by field name."""

    totals: dict[str, Counter[tuple[str, ...]]]
    cells: dict[Cell, dict[str, int]]


@dataclass
class ReplayReference:
    sizes: tuple[tuple[str, int], ...]
    attribution_ms: int
    grace_ms: int
    topics: tuple[str, str] = ("upsell.offers", "upsell.purchases")
    clock: int | None = None
    _seen: dict[str, int] = field(default_factory=dict)
    _offers: list[_KeptOffer] = field(default_factory=list)
    _last_touch: list[_Waiting] = field(default_factory=list)
    _named: list[_Waiting] = field(default_factory=list)
    _sums: dict[Cell, Counter[str]] = field(default_factory=dict)
    _members: dict[Cell, dict[str, set[str]]] = field(default_factory=dict)
    totals: dict[str, Counter[tuple[str, ...]]] = field(default_factory=dict)

    def replay(self, arrivals: list[Arrival]) -> ReplayResult:
        for arrival in arrivals:
            if isinstance(arrival, int):
                self._move(arrival)
            else:
                self._arrive(arrival)
        cells = {
            cell: {**sums, **{name: len(group) for name, group in self._members[cell].items()}}
            for cell, sums in self._sums.items()
        }
        return ReplayResult(self.totals, cells)

    # -- time ------------------------------------------------------------------------
    def _move(self, target: int) -> None:
        """Stream time goes to `target` through every value, deciding what falls due."""
        while True:
            due = self._next_due()
            if due is None or target <= due[0]:
                break
            moment, as_of, decide = due
            self.clock = moment + 1 if self.clock is None else max(self.clock, moment + 1)
            decide(as_of)
        if self.clock is None or target > self.clock:
            self.clock = target

    def _next_due(self) -> tuple[int, int, Callable[[int], None]] | None:
        """The next decision: the moment stream time must pass, the stream time as of
        which it sees the kept offers, and the decision itself."""
        candidates: list[tuple[int, int, str, Callable[[int], None]]] = []
        for waiting in self._last_touch:
            p = waiting.purchase
            candidates.append(
                (p.ts + self.grace_ms, p.ts, p.event_id, partial(self._decide_last_touch, waiting))
            )
        for waiting in self._named:
            p = waiting.purchase
            candidates.append(
                (
                    p.ts + self.attribution_ms + self.grace_ms,
                    p.ts,
                    p.event_id,
                    partial(self._give_up, waiting),
                )
            )
        if not candidates:
            return None
        moment, _, _, decide = min(candidates, key=lambda c: c[:3])
        if self.clock is not None and moment < self.clock:
            # Arrived after its moment: decided at once, among the offers kept now.
            return self.clock - 1, self.clock, decide
        # On time: before anything kept is forgotten as stream time passes this moment.
        return moment, moment, decide

    def _settle_now(self) -> None:
        """Decide everything whose due moment stream time has already passed."""
        if self.clock is not None:
            self._move(self.clock)

    # -- arrivals --------------------------------------------------------------------
    def _arrive(self, event: Event) -> None:
        topic = self.topics[0] if isinstance(event, Offer) else self.topics[1]
        seen_ts = self._seen.get(event.event_id)
        if seen_ts is not None and (
            self.clock is None or self.clock <= seen_ts + self.attribution_ms
        ):
            self._add("duplicates", (topic,), 1)
            return
        self._seen[event.event_id] = event.ts
        labels = [label for label, size in self.sizes if not self._closed(label, size, event.ts)]
        if len(labels) < len(self.sizes):
            self._add("late", (topic,), 1)
        self._move(event.ts)
        if isinstance(event, Offer):
            self._offer(event, labels)
        else:
            self._purchase(event, labels)
        self._settle_now()

    def _offer(self, offer: Offer, labels: list[str]) -> None:
        pair = (offer.channel, offer.segment)
        campaign = (_dim(offer.campaign_type), _dim(offer.product_line))
        self._add("offers", pair, 1)
        self._add("campaign_offers", campaign, 1)
        for view, key in ((CHANNEL_SEGMENT, pair), (CAMPAIGN, campaign)):
            for label in labels:
                self._count(view, label, offer.ts, key, "offers", 1, offer.customer_id)
                self._count(view, label, offer.ts, key, "customers_targeted", 0, offer.customer_id)
        if self._find_offer(offer.customer_id, offer.offer_id) is not None:
            return  # offer_id is unique per presentation: a second one is not kept
        kept = _KeptOffer(offer, labels)
        self._offers.append(kept)
        naming = sorted(
            (
                w
                for w in self._named
                if w.purchase.customer_id == offer.customer_id
                and w.purchase.offer_id == offer.offer_id
            ),
            key=lambda w: (w.purchase.ts, w.purchase.event_id),
        )
        converted = False
        for waiting in naming:
            self._named.remove(waiting)
            # The offer is here, however late: a purchase naming it converts it.
            if not converted and self._eligible(kept, waiting.purchase, None):
                converted = True
                self._convert(kept, waiting, upsell_known=False)
            elif not waiting.purchase.is_upsell:
                self._kind(waiting, "other")  # the only offer it named: never converts

    def _purchase(self, purchase: Purchase, labels: list[str]) -> None:
        waiting = _Waiting(purchase, labels)
        converted = False
        if purchase.offer_id is not None:
            kept = self._find_offer(purchase.customer_id, purchase.offer_id)
            if kept is None:
                self._named.append(waiting)
            elif self._eligible(kept, purchase, self.clock):
                converted = True
        elif purchase.is_upsell:
            self._last_touch.append(waiting)
        if purchase.is_upsell or converted:
            self._kind(waiting, "upsell")
        elif waiting not in self._named:
            self._kind(waiting, "other")
        if converted:
            assert kept is not None
            self._convert(kept, waiting, upsell_known=True)

    # -- decisions -------------------------------------------------------------------
    def _decide_last_touch(self, waiting: _Waiting, as_of: int) -> None:
        self._last_touch.remove(waiting)
        best = None
        for kept in self._offers:
            if self._eligible(kept, waiting.purchase, as_of) and (
                best is None
                or (kept.offer.ts, kept.offer.offer_id) > (best.offer.ts, best.offer.offer_id)
            ):
                best = kept
        if best is not None:
            self._convert(best, waiting, upsell_known=True)

    def _give_up(self, waiting: _Waiting, as_of: int) -> None:
        self._named.remove(waiting)
        if not waiting.purchase.is_upsell:
            self._kind(waiting, "other")

    def _convert(self, kept: _KeptOffer, waiting: _Waiting, *, upsell_known: bool) -> None:
        kept.converted = True
        offer, purchase = kept.offer, waiting.purchase
        pair = (offer.channel, offer.segment)
        campaign = (_dim(offer.campaign_type), _dim(offer.product_line))
        for name, key in (("conversions", pair), ("campaign_conversions", campaign)):
            self._add(name, key, 1)
        for name, key in (("revenue_micros", pair), ("campaign_revenue_micros", campaign)):
            self._add(name, key, purchase.amount_micros)
        for view, key in ((CHANNEL_SEGMENT, pair), (CAMPAIGN, campaign)):
            for label in kept.labels:
                if self._final(label, offer.ts):
                    continue
                self._count(view, label, offer.ts, key, "conversions", 1, offer.customer_id)
                self._count(
                    view,
                    label,
                    offer.ts,
                    key,
                    "revenue_micros",
                    purchase.amount_micros,
                    offer.customer_id,
                )
                self._count(view, label, offer.ts, key, "customers_upsold", 0, offer.customer_id)
        if not upsell_known and not purchase.is_upsell:
            self._kind(waiting, "upsell")

    def _kind(self, waiting: _Waiting, kind: str) -> None:
        """The purchase's kind is known now: it counts in the purchases view."""
        p = waiting.purchase
        loyalty = (
            "unknown"
            if p.loyalty_member is None
            else ("member" if p.loyalty_member else "non_member")
        )
        key = (loyalty, _dim(p.product_line))
        self._add("purchases", (kind, *key), 1)
        self._add("purchase_amount_micros", (kind, *key), p.amount_micros)
        for label in waiting.labels:
            if self._final(label, p.ts):
                continue
            self._count(PURCHASES, label, p.ts, key, f"{kind}_purchases", 1, p.customer_id)
            self._count(
                PURCHASES, label, p.ts, key, f"{kind}_amount_micros", p.amount_micros, p.customer_id
            )
            self._count(PURCHASES, label, p.ts, key, "buyers_any", 0, p.customer_id)
            if kind == "upsell":
                self._count(PURCHASES, label, p.ts, key, "buyers_upsell", 0, p.customer_id)

    # -- rules -----------------------------------------------------------------------
    def _eligible(self, kept: _KeptOffer, purchase: Purchase, as_of: int | None) -> bool:
        offer = kept.offer
        return (
            not kept.converted
            and offer.customer_id == purchase.customer_id
            and 0 <= purchase.ts - offer.ts <= self.attribution_ms
            and self._still_kept(offer, as_of)
        )

    def _still_kept(self, offer: Offer, as_of: int | None) -> bool:
        """An offer is forgotten once stream time passes its ts + attribution + grace."""
        return as_of is None or as_of <= offer.ts + self.attribution_ms + self.grace_ms

    def _find_offer(self, customer: str, offer_id: str) -> _KeptOffer | None:
        for kept in self._offers:
            if (
                kept.offer.customer_id == customer
                and kept.offer.offer_id == offer_id
                and self._still_kept(kept.offer, self.clock)
            ):
                return kept
        return None

    def _bounds(self, label: str, ts: int) -> tuple[int, int]:
        size = dict(self.sizes)[label]
        start = (ts // size) * size
        return start, start + size

    def _closed(self, label: str, size: int, ts: int) -> bool:
        end = (ts // size) * size + size
        return self.clock is not None and self.clock > end + self.grace_ms

    def _final(self, label: str, ts: int) -> bool:
        _, end = self._bounds(label, ts)
        return self.clock is not None and self.clock > end + self.attribution_ms + self.grace_ms

    def _add(self, name: str, key: tuple[str, ...], amount: int) -> None:
        self.totals.setdefault(name, Counter())[key] += amount

    def _count(
        self, view: View, label: str, ts: int, key: Key, name: str, amount: int, customer: str
    ) -> None:
        start, _ = self._bounds(label, ts)
        first, second = key
        for rolled in (key, (first, ALL), (ALL, second), (ALL, ALL)):
            cell = ((view.name, label, start), rolled)
            if name in view.distinct:
                self._members.setdefault(cell, {d: set() for d in view.distinct})[name].add(
                    customer
                )
            else:
                self._sums.setdefault(cell, Counter({s: 0 for s in view.sums}))[name] += amount
                self._members.setdefault(cell, {d: set() for d in view.distinct})


def _dim(value: str | None) -> str:
    return "__none__" if value is None else value
