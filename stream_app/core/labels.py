"""A bound on the label values of each dimension, so that hostile input cannot grow memory.

Dimension values (channel, segment, campaign_type, product_line) come from producers the
service does not control: a million distinct segments would mean a million series in
every window, in the totals, the board and /metrics. Each partition of customers admits
at most `limit` values per dimension, in the order its log presents them; any other value
is counted under `__other__`. So are values longer than MAX_LABEL_CHARS and the reserved
labels `__all__` and `__other__` themselves (a segment named `__all__` would otherwise be
added into the roll-ups twice). A missing value (`__none__`) needs no room.

The admitted values are part of the partition's durable state, so a replay after a crash
or a rebalance decides every value exactly as the first run did.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Final

from stream_app.core.events import Event, Offer
from stream_app.core.views import ALL

OTHER: Final = "__other__"
DEFAULT_MAX_LABEL_VALUES: Final = 300
# Longer than any real channel or product name, short enough for a readable series.
MAX_LABEL_CHARS: Final = 200
RESERVED: Final = frozenset({ALL, OTHER})

CHANNEL: Final = "channel"
SEGMENT: Final = "segment"
CAMPAIGN_TYPE: Final = "campaign_type"
PRODUCT_LINE: Final = "product_line"
DIMENSIONS: Final = (CHANNEL, SEGMENT, CAMPAIGN_TYPE, PRODUCT_LINE)


class LabelCap:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._admitted: dict[str, set[str]] = {name: set() for name in DIMENSIONS}
        self._new: list[tuple[str, str]] = []

    def admitted(self, dimension: str) -> frozenset[str]:
        return frozenset(self._admitted[dimension])

    def label(self, dimension: str, value: str) -> str | None:
        """The label `value` is counted under: itself if admitted (or room is left), else
        None, meaning OTHER."""
        admitted = self._admitted[dimension]
        if value in admitted:
            return value
        if len(admitted) >= self.limit or len(value) > MAX_LABEL_CHARS or value in RESERVED:
            return None
        admitted.add(value)
        self._new.append((dimension, value))
        return value

    def cap(self, event: Event) -> tuple[Event, list[str]]:
        """The event with its dimension values capped, and the dimensions that overflowed."""
        overflowed: list[str] = []

        def capped(dimension: str, value: str | None) -> str | None:
            if value is None:
                return None
            label = self.label(dimension, value)
            if label is None:
                overflowed.append(dimension)
                return OTHER
            return label

        if isinstance(event, Offer):
            channel = capped(CHANNEL, event.channel)
            segment = capped(SEGMENT, event.segment)
            campaign_type = capped(CAMPAIGN_TYPE, event.campaign_type)
            product_line = capped(PRODUCT_LINE, event.product_line)
            if overflowed:
                # Kept offers hold the label, not a possibly huge raw value.
                assert channel is not None and segment is not None
                event = replace(event, channel=channel, segment=segment,
                                campaign_type=campaign_type, product_line=product_line)
        else:
            product_line = capped(PRODUCT_LINE, event.product_line)
            if overflowed:
                event = replace(event, product_line=product_line)
        return event, overflowed

    # -- persistence ---------------------------------------------------------------------
    def take_new(self) -> list[tuple[str, str]]:
        """Values admitted since the last call, to be stored with the partition's state."""
        new, self._new = self._new, []
        return new

    def restore(self, entries: Iterable[tuple[str, str]]) -> None:
        for dimension, value in entries:
            if dimension in self._admitted:
                self._admitted[dimension].add(value)
