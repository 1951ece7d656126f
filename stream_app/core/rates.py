"""Rate math and the `__all__` roll-ups shared by the rates topic and the metrics."""

from __future__ import annotations

from collections.abc import Mapping

from stream_app.core.cohorts import CohortCounts, Pair

ALL = "__all__"


def ratio(numerator: int, denominator: int) -> float | None:
    """numerator / denominator, or None while the denominator is 0 (a rate is then absent)."""
    return numerator / denominator if denominator else None


def rollup_keys(pair: Pair) -> tuple[Pair, Pair, Pair, Pair]:
    """The key itself and the three roll-ups it counts in."""
    first, second = pair
    return (pair, (first, ALL), (ALL, second), (ALL, ALL))


def with_rollups(by_pair: Mapping[Pair, CohortCounts]) -> dict[Pair, CohortCounts]:
    """Every pair plus its roll-ups, each the sum of the pairs it covers."""
    summed: dict[Pair, CohortCounts] = {}
    for pair, counts in by_pair.items():
        for key in rollup_keys(pair):
            target = summed.get(key)
            if target is None:
                target = summed[key] = CohortCounts()
            target.add(counts)
    return summed
