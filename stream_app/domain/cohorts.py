"""Counts per view, window and key: sums and distinct customers, with change tracking.

Compiled (engine/src/cohorts.rs); this module keeps the types Python code shares.

Every count is made for the key and its three roll-ups at once, so that a distinct
customer counts once in each roll-up and the rates board only has to add partitions up.

Distinct customers are held once per slot and field, each with the keys it was counted
under, not in a set per cell: a cell's members are those of the keys it rolls up, so its
count is kept as a number and its members are worked out only when the slot is dropped.
A set per cell held every new customer four times (the key and its three roll-ups), the
largest share of the memory per open offer.

Stored, a customer's memberships in one window (every view, every distinct field) are one
entry: one entry per membership was most of the changelog's records, about 4 per event.
Memberships added to a window the customer was counted in already are written as one more
entry per write, holding only those ([label, start, customer, write number]), not the whole
entry again: a frequent customer's day window grew to 3.3 KB, rewritten by every batch that
counted it under a new key. Those entries are not deleted with their window (its cells and
whole entries are); a restore leaves out the memberships of a window it does not hold.
"""

from __future__ import annotations

from stream_app._engine import WindowCounts
from stream_app.domain.immutable import immutable
from stream_app.domain.views import Key

WindowKey = tuple[str, int]  # (window label, window start)
ViewWindowKey = tuple[str, str, int]  # (view name, window label, window start)


@immutable
class Partial:
    """One partition's current vector of one key of one view in one window."""

    view: str
    label: str
    start: int
    key: Key
    vector: list[int]


__all__ = ["Partial", "WindowCounts", "WindowKey"]
