"""The state of one partition of customers: dedupe, stream time, attribution, counts.

`CustomerPartition.apply` takes the items of the internal topic in log order and keeps
everything the contract counts: totals, the windows of every view, rejected, late and
duplicate events. After a batch, `take_partials` gives the window vectors that changed
(for the rates board) and `take_changes` the store entries to persist, with the input
offset they reflect. Results depend only on the order of the log, never on how it was cut
into batches, so a replay after a crash ends in the same state.

The state and its rules are compiled (engine/src/partition.rs and the modules it uses);
this module keeps what Python code shares: the window configuration, the totals and
their names, the views' keys, and the typed face of the compiled class.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stream_app import _engine
from stream_app.core.cohorts import Partial, WindowKey
from stream_app.core.events import Offer, Purchase
from stream_app.core.forwarding import Forwarded, encode_forwarded
from stream_app.core.labels import DEFAULT_MAX_LABEL_VALUES
from stream_app.core.views import CHANNEL_SEGMENT, Key, View
from stream_app.core.views import dimension as dim
from stream_app.core.views import loyalty as loyalty_of
from stream_app.core.windows import is_final

# The key of a partition's meta entry in its store (the compiled core writes its entries;
# the rates board keeps its own meta entry under the same key).
META_KEY = "m"


@dataclass(frozen=True, slots=True)
class WindowConfig:
    sizes: tuple[tuple[str, int], ...]
    attribution_ms: int
    grace_ms: int
    # UPSELL_MAX_LABEL_VALUES: values admitted per dimension and partition (labels.py).
    max_label_values: int = DEFAULT_MAX_LABEL_VALUES

    _size_by_label: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Looked up several times per event.
        object.__setattr__(self, "_size_by_label", dict(self.sizes))

    def size_ms(self, label: str) -> int:
        return self._size_by_label[label]

    def is_final(self, window: WindowKey, stream_time: int | None) -> bool:
        end = window[1] + self.size_ms(window[0])
        return is_final(end, stream_time, self.grace_ms, self.attribution_ms)


# Totals: counters since the start of the stream, by name, each keyed by label values.
OFFERS_TOTAL = "offers"  # (channel, segment)
CONVERSIONS_TOTAL = "conversions"
REVENUE_TOTAL = "revenue_micros"
CAMPAIGN_OFFERS_TOTAL = "campaign_offers"  # (campaign_type, product_line)
CAMPAIGN_CONVERSIONS_TOTAL = "campaign_conversions"
CAMPAIGN_REVENUE_TOTAL = "campaign_revenue_micros"
PURCHASES_TOTAL = "purchases"  # (kind, loyalty, product_line)
PURCHASE_AMOUNT_TOTAL = "purchase_amount_micros"
REJECTED_TOTAL = "rejected"  # (topic, reason)
LATE_TOTAL = "late"  # (topic,)
DUPLICATES_TOTAL = "duplicates"  # (topic,)
LABEL_OVERFLOW_TOTAL = "label_overflow"  # (dimension,)
TOTALS = (
    OFFERS_TOTAL,
    CONVERSIONS_TOTAL,
    REVENUE_TOTAL,
    CAMPAIGN_OFFERS_TOTAL,
    CAMPAIGN_CONVERSIONS_TOTAL,
    CAMPAIGN_REVENUE_TOTAL,
    PURCHASES_TOTAL,
    PURCHASE_AMOUNT_TOTAL,
    REJECTED_TOTAL,
    LATE_TOTAL,
    DUPLICATES_TOTAL,
    LABEL_OVERFLOW_TOTAL,
)


@dataclass(slots=True)
class Totals:
    counters: dict[str, Counter[tuple[str, ...]]] = field(
        default_factory=lambda: {name: Counter() for name in TOTALS}
    )

    def __getitem__(self, name: str) -> Counter[tuple[str, ...]]:
        return self.counters[name]

    def add(self, other: Totals) -> None:
        for name, counter in other.counters.items():
            self.counters[name].update(counter)

    def as_row(self) -> dict[str, list[list[Any]]]:
        return {
            name: [[*key, n] for key, n in counter.items()]
            for name, counter in self.counters.items()
            if counter
        }

    @classmethod
    def from_row(cls, row: dict[str, list[list[Any]]]) -> Totals:
        totals = cls()
        for name, entries in row.items():
            totals.counters[name] = Counter({tuple(entry[:-1]): entry[-1] for entry in entries})
        return totals


def offer_key(view: View, offer: Offer) -> Key:
    if view is CHANNEL_SEGMENT:
        return (offer.channel, offer.segment)
    return (dim(offer.campaign_type), dim(offer.product_line))


def purchase_key(purchase: Purchase) -> Key:
    return (loyalty_of(purchase.loyalty_member), dim(purchase.product_line))


class CustomerPartition:
    """One partition of customers, compiled (engine/src/partition.rs): this face keeps the
    typed Python API and hands every call to the compiled state."""

    def __init__(
        self, config: WindowConfig, *, _core: _engine.CustomerPartition | None = None
    ) -> None:
        self.config = config
        self._core = (
            _core if _core is not None else _engine.CustomerPartition(*_config_args(config))
        )

    # -- processing ------------------------------------------------------------------
    def apply(self, item: Forwarded, offset: int) -> None:
        """Apply one item of the internal topic read at `offset`."""
        self._core.apply_raw(encode_forwarded(item), offset)

    def apply_raw(self, value: bytes, offset: int) -> None:
        """Apply one record of the internal topic: its value as encode_forwarded wrote it."""
        self._core.apply_raw(value, offset)

    def apply_records(self, records: Iterable[_engine.Record]) -> None:
        """Apply fetched records of the internal topic in order (one call per batch);
        records without a value are skipped."""
        self._core.apply_records(records)

    def apply_handed(
        self, values: list[tuple[str, int, int, int | None, _engine.Accepted] | bytes]
    ) -> None:
        """Apply items the validating stage hands over in process (stream_app/handoff.py),
        in order: an accepted event as (source topic, partition, offset, stamp, Accepted),
        or another item as encode_forwarded writes it. They have no offset of the internal
        topic, and count once by their source offsets."""
        self._core.apply_handed(values)

    @property
    def stream_time(self) -> int | None:
        return self._core.stream_time

    @property
    def next_offset(self) -> int:
        return self._core.next_offset

    @property
    def totals(self) -> Totals:
        """A snapshot of the totals (counters since the start of the stream)."""
        return Totals.from_row(self._core.totals_row())

    # -- reading ---------------------------------------------------------------------
    def window_vectors(self, view: View, window: WindowKey) -> dict[Key, list[int]]:
        return self._core.window_vectors(view.name, window)

    def windows(self) -> list[tuple[str, WindowKey]]:
        """(view name, window) of every window held."""
        return self._core.windows()

    def open_offers(self) -> int:
        return self._core.open_offers()

    def admitted_labels(self, dimension: str) -> frozenset[str]:
        return self._core.admitted_labels(dimension)

    # -- after a batch ---------------------------------------------------------------
    def take_partials(self) -> list[Partial]:
        return self._core.take_partials()

    def take_partials_encoded(self, partition: int, per_message: int) -> list[bytes]:
        """`take_partials` as the partials topic's messages of this partition, in the
        format of board.encode_partials, at most `per_message` partials each (one message
        at least); only the last carries the stream time."""
        return self._core.take_partials_encoded(partition, per_message)

    def take_changes(self) -> dict[str, Any]:
        """Store entries changed since the last call (None deletes), and forget expired state."""
        return self._core.take_changes()

    # -- restore ---------------------------------------------------------------------
    @classmethod
    def restore(cls, config: WindowConfig, entries: dict[str, Any]) -> CustomerPartition:
        """Rebuild from the store entries that `take_changes` wrote."""
        return cls(config, _core=_engine.CustomerPartition.restore(*_config_args(config), entries))


def _config_args(config: WindowConfig) -> tuple[list[tuple[str, int]], int, int, int]:
    return list(config.sizes), config.attribution_ms, config.grace_ms, config.max_label_values
