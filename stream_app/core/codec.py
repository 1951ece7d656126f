"""Compact rows for validated events, used on the internal topic and in stored state.

Rows are plain JSON lists: they are written by this service only, so reading them skips
validation, and their field order is fixed by the dataclasses in events.py.
"""

from __future__ import annotations

from dataclasses import astuple
from typing import Any

from stream_app.core.events import Event, Offer, Purchase

OFFER_TAG = "o"
PURCHASE_TAG = "p"


def event_to_row(event: Event) -> list[Any]:
    tag = OFFER_TAG if isinstance(event, Offer) else PURCHASE_TAG
    return [tag, *astuple(event)]


def event_from_row(row: list[Any]) -> Event:
    if row[0] == OFFER_TAG:
        return Offer(*row[1:])
    return Purchase(*row[1:])
