"""Which purchase converts which offer.

A purchase converts an offer of the same customer when 0 <= purchase.ts - offer.ts <=
attribution window and either it names the offer (converted as soon as both are here, in
any arrival order) or it names none, is an upsell, and the offer is the customer's most
recent unconverted one (last touch). Last-touch purchases are decided once stream time
passes ts + grace, all of them in (ts, event_id) order, so that purchases arriving out of
order within the grace period are matched as if they had arrived in order.

An offer is kept until stream time passes its ts + attribution window + grace, a purchase
waiting for the offer it names until stream time passes the purchase's ts + attribution
window + grace (then it gave up). Both happen in `advance`, after the last-touch purchases
due by then are decided, so what is kept never depends on how the log was cut into batches.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from stream_app.core.events import Offer, Purchase
from stream_app.core.expiry import ExpiryQueue


@dataclass(slots=True)
class OpenOffer:
    """An offer kept for attribution; `windows` are the window labels it was counted in."""

    offer: Offer
    windows: tuple[str, ...]
    converted_by: str | None = None


@dataclass(frozen=True, slots=True)
class Conversion:
    """`due`: the stream time whose passing decided it (a last-touch purchase's ts +
    grace); None when it was decided by an event's arrival."""

    offer: OpenOffer
    purchase: Purchase
    due: int | None = None


@dataclass(frozen=True, slots=True)
class GivenUp:
    """A purchase that named an offer which can no longer convert for it; `due` as in
    Conversion."""

    purchase: Purchase
    due: int | None = None


OfferRef = tuple[str, str]  # (customer_id, offer_id)


@dataclass(slots=True)
class _Changes:
    offers: set[OfferRef] = field(default_factory=set)
    purchases: set[str] = field(default_factory=set)


class Attribution:
    def __init__(self, attribution_ms: int, grace_ms: int) -> None:
        self._attribution_ms = attribution_ms
        self._grace_ms = grace_ms
        # customer_id -> offer_id -> kept offer: a customer's result comes from that
        # customer's events alone, as it must when customers are spread over partitions.
        # One dict per customer is both the index by (customer_id, offer_id) and the
        # customer's offers for last touch, without a key tuple per offer.
        self._offers: dict[str, dict[str, OpenOffer]] = {}
        self._offer_count = 0
        self._waiting_for_offer: dict[OfferRef, list[Purchase]] = {}
        self._last_touch_due: list[tuple[int, int, str, Purchase]] = []
        self._pending: dict[str, Purchase] = {}
        # Every kept offer waits here to be forgotten once its ts + attribution window +
        # grace is behind stream time.
        self._offer_expiry: ExpiryQueue[Offer] = ExpiryQueue(_ref)
        self._waiting_expiry: list[tuple[int, str]] = []
        # Purchases that named an offer which can no longer convert for them.
        self.given_up: list[GivenUp] = []
        self.changes = _Changes()

    # -- reading -------------------------------------------------------------------
    def offer(self, ref: OfferRef) -> OpenOffer | None:
        offers = self._offers.get(ref[0])
        return None if offers is None else offers.get(ref[1])

    def open_offers(self) -> Iterable[OpenOffer]:
        for offers in self._offers.values():
            yield from offers.values()

    def pending_purchase(self, event_id: str) -> Purchase | None:
        return self._pending.get(event_id)

    def __len__(self) -> int:
        return self._offer_count + len(self._pending)

    # -- events --------------------------------------------------------------------
    def add_offer(self, offer: Offer, windows: tuple[str, ...]) -> list[Conversion]:
        """Keep an offer; returns the conversion if a purchase naming it was waiting."""
        offers = self._offers.get(offer.customer_id)
        if offers is not None and offer.offer_id in offers:
            # offer_id is unique per presentation: a second one can't be told apart by id.
            return []
        kept = OpenOffer(offer, windows)
        self._keep_offer(kept)
        conversions: list[Conversion] = []
        # The only offer with this id is here now: whoever it does not convert never will.
        for purchase in sorted(self._waiting_for_offer.get(_ref(offer), ()),
                               key=_event_order):
            self._drop_pending(purchase)
            if not conversions and self._matches(kept, purchase):
                conversions.append(self._convert(kept, purchase))
            else:
                self.given_up.append(GivenUp(purchase))
        return conversions

    def add_purchase(self, purchase: Purchase) -> list[Conversion]:
        """Attribute a purchase; last-touch ones wait in line until `advance` decides them."""
        if purchase.offer_id is not None:
            offers = self._offers.get(purchase.customer_id)
            kept = None if offers is None else offers.get(purchase.offer_id)
            if kept is None:
                self._keep_pending(purchase)
            elif self._matches(kept, purchase):
                return [self._convert(kept, purchase)]
        elif purchase.is_upsell:
            self._keep_pending(purchase)
        return []

    def advance(self, stream_time: int | None) -> list[Conversion]:
        """Decide every last-touch purchase whose ts + grace stream time has passed, then
        forget what nothing on time can match any more."""
        if stream_time is None:
            return []
        conversions: list[Conversion] = []
        due = self._last_touch_due
        while due and stream_time > due[0][0]:
            due_at, _, _, purchase = heapq.heappop(due)
            if self._pending.get(purchase.event_id) is not purchase:
                continue
            self._drop_pending(purchase)
            chosen = self._last_touch_offer(purchase)
            if chosen is not None:
                conversions.append(self._convert(chosen, purchase, due_at))
        self._expire(stream_time)
        return conversions

    def take_given_up(self) -> list[GivenUp]:
        given_up, self.given_up = self.given_up, []
        return given_up

    def is_waiting(self, purchase: Purchase) -> bool:
        return self._pending.get(purchase.event_id) is purchase

    def _expire(self, stream_time: int) -> None:
        horizon = self._attribution_ms + self._grace_ms
        # Those whose ts + horizon < stream_time, in (ts, customer_id, offer_id) order.
        for _, offer in self._offer_expiry.take_due(stream_time - horizon):
            self._forget_offer(offer.customer_id, offer.offer_id)
        while self._waiting_expiry and self._waiting_expiry[0][0] + horizon < stream_time:
            ts, event_id = heapq.heappop(self._waiting_expiry)
            purchase = self._pending.get(event_id)
            if purchase is not None and purchase.offer_id is not None:
                self._drop_pending(purchase)
                self.given_up.append(GivenUp(purchase, ts + horizon))

    def _forget_offer(self, customer_id: str, offer_id: str) -> None:
        offers = self._offers.get(customer_id)
        if offers is None or offers.pop(offer_id, None) is None:
            return
        self._offer_count -= 1
        if not offers:
            del self._offers[customer_id]
        self.changes.offers.add((customer_id, offer_id))

    # -- restore -------------------------------------------------------------------
    def restore_offer(self, kept: OpenOffer) -> None:
        self._keep_offer(kept)
        self.changes.offers.discard(_ref(kept.offer))

    def restore_pending(self, purchase: Purchase) -> None:
        self._keep_pending(purchase)
        self.changes.purchases.discard(purchase.event_id)

    # -- internals -----------------------------------------------------------------
    def _matches(self, kept: OpenOffer, purchase: Purchase) -> bool:
        offer = kept.offer
        return (
            kept.converted_by is None
            and offer.customer_id == purchase.customer_id
            and 0 <= purchase.ts - offer.ts <= self._attribution_ms
        )

    def _last_touch_offer(self, purchase: Purchase) -> OpenOffer | None:
        best: OpenOffer | None = None
        for kept in self._offers.get(purchase.customer_id, _NO_OFFERS).values():
            if self._matches(kept, purchase) and (
                best is None
                or (kept.offer.ts, kept.offer.offer_id) > (best.offer.ts, best.offer.offer_id)
            ):
                best = kept
        return best

    def _convert(self, kept: OpenOffer, purchase: Purchase,
                 due: int | None = None) -> Conversion:
        kept.converted_by = purchase.event_id
        self.changes.offers.add(_ref(kept.offer))
        return Conversion(kept, purchase, due)

    def _keep_offer(self, kept: OpenOffer) -> None:
        offer = kept.offer
        offers = self._offers.get(offer.customer_id)
        if offers is None:
            offers = self._offers[offer.customer_id] = {}
        if offer.offer_id not in offers:
            self._offer_count += 1
        offers[offer.offer_id] = kept
        self._offer_expiry.push(offer.ts, offer)
        self.changes.offers.add(_ref(offer))

    def _keep_pending(self, purchase: Purchase) -> None:
        """Wait for the named offer, or in line for a last-touch decision."""
        self._pending[purchase.event_id] = purchase
        self.changes.purchases.add(purchase.event_id)
        if purchase.offer_id is not None:
            self._waiting_for_offer.setdefault(_waiting_ref(purchase), []).append(purchase)
            heapq.heappush(self._waiting_expiry, (purchase.ts, purchase.event_id))
        else:
            heapq.heappush(
                self._last_touch_due,
                (purchase.ts + self._grace_ms, purchase.ts, purchase.event_id, purchase),
            )

    def _drop_pending(self, purchase: Purchase) -> None:
        self._pending.pop(purchase.event_id, None)
        self.changes.purchases.add(purchase.event_id)
        if purchase.offer_id is not None:
            waiting = self._waiting_for_offer.get(_waiting_ref(purchase))
            if waiting is not None:
                waiting.remove(purchase)
                if not waiting:
                    del self._waiting_for_offer[_waiting_ref(purchase)]


_NO_OFFERS: dict[str, OpenOffer] = {}


def _ref(offer: Offer) -> OfferRef:
    return (offer.customer_id, offer.offer_id)


def _waiting_ref(purchase: Purchase) -> OfferRef:
    return (purchase.customer_id, purchase.offer_id or "")


def _event_order(purchase: Purchase) -> tuple[int, str]:
    return (purchase.ts, purchase.event_id)
