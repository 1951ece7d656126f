"""The three views the KPIs are counted in, and the `__all__` roll-ups of their keys.

A view places each offer (or purchase) under a two-dimension key and counts a vector of
numbers per key and window. `offers` views count by the offer's ts (cohorts): an offer's
conversion counts in the windows of the offer. The `purchases` view counts a purchase in
the windows of its own ts. Distinct-customer fields count each customer once per key
and window, roll-ups included: a partition holds all of a customer's events, so distinct
counts of the partitions add up exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from stream_app.domain.events import Offer, Purchase

ALL: Final = "__all__"
NONE: Final = "__none__"

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class View:
    name: str
    dimensions: tuple[str, str]
    sums: tuple[str, ...]
    distinct: tuple[str, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        return self.sums + self.distinct

    def index(self, field: str) -> int:
        return self.fields.index(field)


OFFER_SUMS: Final = ("offers", "conversions", "revenue_micros")
OFFER_DISTINCT: Final = ("customers_targeted", "customers_upsold")

CHANNEL_SEGMENT: Final = View("channel_segment", ("channel", "segment"), OFFER_SUMS, OFFER_DISTINCT)
CAMPAIGN: Final = View("campaign", ("campaign_type", "product_line"), OFFER_SUMS, OFFER_DISTINCT)
PURCHASES: Final = View(
    "purchases",
    ("loyalty", "product_line"),
    ("upsell_purchases", "other_purchases", "upsell_amount_micros", "other_amount_micros"),
    ("buyers_any", "buyers_upsell"),
)
VIEWS: Final = (CHANNEL_SEGMENT, CAMPAIGN, PURCHASES)
OFFER_VIEWS: Final = (CHANNEL_SEGMENT, CAMPAIGN)
VIEW_BY_NAME: Final = {view.name: view for view in VIEWS}


def rollups(key: Key) -> tuple[Key, Key, Key, Key]:
    """The key itself and the three roll-ups it counts in."""
    first, second = key
    return (key, (first, ALL), (ALL, second), (ALL, ALL))


def dimension(value: str | None) -> str:
    """A missing dimension value is reported as `__none__`."""
    return NONE if value is None else value


def loyalty(member: bool | None) -> str:
    if member is None:
        return "unknown"
    return "member" if member else "non_member"


def offer_key(view: View, offer: Offer) -> Key:
    if view is CHANNEL_SEGMENT:
        return (offer.channel, offer.segment)
    return (dimension(offer.campaign_type), dimension(offer.product_line))


def purchase_key(purchase: Purchase) -> Key:
    return (loyalty(purchase.loyalty_member), dimension(purchase.product_line))
