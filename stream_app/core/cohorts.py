"""Offers and their conversions counted per window of the offer's ts (cohorts).

An offer counts in the window of each size that holds its ts; a later conversion counts in
those same windows, so a window's conversions never exceed its offers.
"""

from __future__ import annotations

from dataclasses import dataclass

Pair = tuple[str, str]
WindowKey = tuple[str, int]


@dataclass(slots=True)
class CohortCounts:
    """Offers, conversions and converted revenue (micro-units) of one key in one window."""

    offers: int = 0
    conversions: int = 0
    revenue_micros: int = 0

    def add(self, other: CohortCounts) -> None:
        self.offers += other.offers
        self.conversions += other.conversions
        self.revenue_micros += other.revenue_micros

    def as_row(self) -> list[int]:
        return [self.offers, self.conversions, self.revenue_micros]

    @classmethod
    def from_row(cls, row: list[int]) -> CohortCounts:
        return cls(row[0], row[1], row[2])


class CohortTable:
    """Counts per (window label, window start) and (channel, segment), with change tracking."""

    def __init__(self) -> None:
        self.windows: dict[WindowKey, dict[Pair, CohortCounts]] = {}
        self.changed: set[tuple[WindowKey, Pair]] = set()

    def counts(self, window: WindowKey, pair: Pair) -> CohortCounts:
        by_pair = self.windows.setdefault(window, {})
        found = by_pair.get(pair)
        if found is None:
            found = by_pair[pair] = CohortCounts()
        return found

    def add_offer(self, window: WindowKey, pair: Pair) -> None:
        self.counts(window, pair).offers += 1
        self.changed.add((window, pair))

    def add_conversion(self, window: WindowKey, pair: Pair, revenue_micros: int) -> None:
        counts = self.counts(window, pair)
        counts.conversions += 1
        counts.revenue_micros += revenue_micros
        self.changed.add((window, pair))

    def drop(self, window: WindowKey) -> None:
        self.windows.pop(window, None)
