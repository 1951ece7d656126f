"""A bound on the label values of each dimension, so that hostile input cannot grow memory.

Dimension values (channel, segment, campaign_type, product_line) come from producers the
service does not control: a million distinct segments would mean a million series in
every window, in the totals, the board and /metrics. Each partition of customers admits
at most `limit` values per dimension, in the order its log presents them; any other value
is counted under `__other__`. So are values longer than MAX_LABEL_CHARS and the reserved
labels `__all__` and `__other__` themselves (a segment named `__all__` would otherwise be
added into the roll-ups twice). A missing value (`__none__`) needs no room.

An admitted value leaves once unused for the attribution window of stream time, so junk
sent first cannot push real values into `__other__` for good. The admitted values and
their recorded last use are part of the partition's durable state, so a replay after a
crash or a rebalance decides every value exactly as the first run did.
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
# An admitted value's last use is recorded (and stored) again once it is this share of the
# expiry older: a value in steady use costs a few store writes per attribution window.
REFRESH_DIVISOR: Final = 8
RESERVED: Final = frozenset({ALL, OTHER})

CHANNEL: Final = "channel"
SEGMENT: Final = "segment"
CAMPAIGN_TYPE: Final = "campaign_type"
PRODUCT_LINE: Final = "product_line"
DIMENSIONS: Final = (CHANNEL, SEGMENT, CAMPAIGN_TYPE, PRODUCT_LINE)


class LabelCap:
    """The values admitted per dimension, each with the stream time it was last used at.

    A value unused for longer than `expire_ms` of stream time (the attribution window)
    leaves and frees its place, so that values sent first cannot hold the cap forever.
    The last use is recorded in steps of 1/REFRESH_DIVISOR of `expire_ms` (each change is
    a store write), and a value leaves once stream time passes its recorded last use by
    `expire_ms` + that step: after between 1 and 1 + 1/REFRESH_DIVISOR windows unused.
    """

    def __init__(self, limit: int, expire_ms: int) -> None:
        self.limit = limit
        self.expire_ms = expire_ms
        self._refresh_ms = expire_ms // REFRESH_DIVISOR
        # value -> recorded last use, oldest first: recording moves a value to the end.
        self._admitted: dict[str, dict[str, int]] = {name: {} for name in DIMENSIONS}
        # Stream time past which the oldest recorded value leaves (None: nothing admitted).
        self._next_expiry: int | None = None
        self._changed: set[tuple[str, str]] = set()
        # The largest stream time seen: what `label` is told never decreases.
        self._clock: int | None = None

    def admitted(self, dimension: str) -> frozenset[str]:
        return frozenset(self._admitted[dimension])

    def label(self, dimension: str, value: str, now: int) -> str | None:
        """The label `value` is counted under at stream time `now` (never decreasing):
        itself if admitted (or room is left), else None, meaning OTHER."""
        if self._next_expiry is not None and now > self._next_expiry:
            self._expire(now)
        admitted = self._admitted[dimension]
        last_use = admitted.get(value)
        if last_use is not None:
            if now - last_use >= self._refresh_ms and now != last_use:
                del admitted[value]
                self._record(dimension, value, now)
            return value
        if len(admitted) >= self.limit or len(value) > MAX_LABEL_CHARS or value in RESERVED:
            return None
        self._record(dimension, value, now)
        return value

    def _record(self, dimension: str, value: str, now: int) -> None:
        self._admitted[dimension][value] = now
        self._changed.add((dimension, value))
        if self._next_expiry is None:
            self._next_expiry = now + self.expire_ms + self._refresh_ms

    def forget_unused(self, stream_time: int | None) -> None:
        """Let the values unused for too long leave now rather than at the next use, so
        that the store forgets them (the decisions are the same either way)."""
        if stream_time is not None and self._next_expiry is not None \
                and stream_time > self._next_expiry:
            self._expire(stream_time)

    def _expire(self, now: int) -> None:
        oldest_kept: int | None = None
        for dimension, admitted in self._admitted.items():
            while admitted:
                value, last_use = next(iter(admitted.items()))
                if now <= last_use + self.expire_ms + self._refresh_ms:
                    oldest_kept = last_use if oldest_kept is None else min(oldest_kept, last_use)
                    break
                del admitted[value]
                self._changed.add((dimension, value))
        self._next_expiry = (None if oldest_kept is None
                             else oldest_kept + self.expire_ms + self._refresh_ms)

    def cap(self, event: Event, stream_time: int | None) -> tuple[Event, list[str]]:
        """The event with its dimension values capped, and the dimensions that overflowed;
        `stream_time` is the stream time before the event (None: none yet)."""
        overflowed: list[str] = []
        now = event.ts
        for moment in (stream_time, self._clock):
            if moment is not None and moment > now:
                now = moment
        self._clock = now

        def capped(dimension: str, value: str | None) -> str | None:
            if value is None:
                return None
            label = self.label(dimension, value, now)
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
    def take_changes(self) -> list[tuple[str, str, int | None]]:
        """(dimension, value, recorded last use or None once it left) of the values
        admitted, used or gone since the last call, for the partition's store."""
        changes = [(dimension, value, self._admitted[dimension].get(value))
                   for dimension, value in self._changed]
        self._changed.clear()
        return changes

    def restore(self, entries: Iterable[tuple[str, str, int]]) -> None:
        """Values and their recorded last use as `take_changes` gave them, in any order."""
        for dimension, value, last_use in sorted(entries, key=lambda entry: entry[2]):
            if dimension in self._admitted:
                self._admitted[dimension][value] = last_use
                self._clock = last_use if self._clock is None else max(self._clock, last_use)
                if self._next_expiry is None or last_use + self.expire_ms + \
                        self._refresh_ms < self._next_expiry:
                    self._next_expiry = last_use + self.expire_ms + self._refresh_ms
