"""The durable counters of a customer partition, by name, each keyed by label values."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Counters since the start of the stream; the comment gives each one's label values.
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
