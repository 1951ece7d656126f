"""Which purchase converts which offer.

A purchase converts an offer of the same customer when 0 <= purchase.ts - offer.ts <=
attribution window and either it names the offer (converted as soon as both are here, in
any arrival order) or it names none, is an upsell, and the offer is the customer's most
recent unconverted one (last touch). Last-touch purchases are decided once stream time
passes ts + grace, all of them in (ts, event_id) order, so that purchases arriving out of
order within the grace period are matched as if they had arrived in order.

An offer is kept until stream time passes its ts + attribution window + grace, a purchase
waiting for the offer it names until stream time passes the purchase's ts + attribution
window + grace (then it gave up). Both happen when stream time advances, after the
last-touch purchases due by then are decided, so what is kept never depends on how the
log was cut into batches.

Compiled (engine/src/attribution.rs) as part of the partition; `Attribution` alone is
exposed for the tests of when offers are forgotten.
"""

from __future__ import annotations

from stream_app._engine import Attribution

OfferRef = tuple[str, str]  # (customer_id, offer_id)

__all__ = ["Attribution", "OfferRef"]
