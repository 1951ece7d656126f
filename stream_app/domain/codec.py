"""Compact rows for validated events, used on the internal topic and in stored state.

Rows are plain JSON lists: they are written by this service only, so reading them skips
validation, and their field order is fixed by the dataclasses in events.py.
"""

from __future__ import annotations

from dataclasses import fields
from operator import attrgetter
from sys import intern
from typing import Any

from stream_app.domain.events import Event, Offer, Purchase

OFFER_TAG = "o"
PURCHASE_TAG = "p"


# dataclasses.astuple deep-copies field by field; the fields are flat, so one attrgetter
# per class does the same several times faster (this runs for every event, twice).
_OFFER_FIELDS = attrgetter(*(f.name for f in fields(Offer)))
_PURCHASE_FIELDS = attrgetter(*(f.name for f in fields(Purchase)))


def event_to_row(event: Event) -> list[Any]:
    if isinstance(event, Offer):
        return [OFFER_TAG, *_OFFER_FIELDS(event)]
    return [PURCHASE_TAG, *_PURCHASE_FIELDS(event)]


def event_from_row(row: list[Any]) -> Event:
    # Customer ids and dimension values repeat across events: one shared copy each instead
    # of one per event held for attribution (a few hundred bytes per open offer).
    if row[0] == OFFER_TAG:
        (
            _,
            event_id,
            offer_id,
            customer,
            channel,
            segment,
            ts,
            campaign_id,
            campaign_type,
            product_line,
            *rest,
        ) = row
        return Offer(
            event_id,
            offer_id,
            intern(customer),
            intern(channel),
            intern(segment),
            ts,
            _interned(campaign_id),
            _interned(campaign_type),
            _interned(product_line),
            *rest,
        )
    (_, event_id, order_id, customer, *rest) = row
    return Purchase(event_id, order_id, intern(customer), *rest)


def _interned(value: str | None) -> str | None:
    return None if value is None else intern(value)
