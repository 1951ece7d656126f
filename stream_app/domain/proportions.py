"""Comparing two conversion rates: the one-sided two-proportion z-test.

A window's rate (x1 of n1 offers converted) against a baseline's (x2 of n2). Under the
null hypothesis both share one rate p, estimated pooled: p = (x1 + x2) / (n1 + n2), and

    z = (x1/n1 - x2/n2) / sqrt(p (1 - p) (1/n1 + 1/n2))

is about standard normal once both sides have a few conversions and non-conversions. The
p-value is one-sided (lower tail): only a drop is of interest, a rise never alerts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sample:
    """Offers and how many of them converted, in one window or summed over several."""

    offers: int
    conversions: int

    @property
    def rate(self) -> float | None:
        return self.conversions / self.offers if self.offers else None

    def __add__(self, other: Sample) -> Sample:
        return Sample(self.offers + other.offers, self.conversions + other.conversions)


@dataclass(frozen=True, slots=True)
class Comparison:
    observed: Sample
    baseline: Sample
    z: float
    p_value: float

    @property
    def relative_drop(self) -> float | None:
        """(baseline rate - observed rate) / baseline rate; None while either is undefined
        or the baseline rate is 0 (nothing to drop from)."""
        observed, baseline = self.observed.rate, self.baseline.rate
        if observed is None or not baseline:
            return None
        return (baseline - observed) / baseline


def lower_tail(z: float) -> float:
    """P(Z <= z) for a standard normal Z."""
    return 0.5 * math.erfc(-z / math.sqrt(2))


def compare(observed: Sample, baseline: Sample) -> Comparison:
    """The z statistic and one-sided p-value of `observed` being below `baseline`.

    Without offers on a side, or with a pooled rate of 0 or 1 (no variation to judge by),
    there is no evidence either way: z = 0, p = 0.5.
    """
    n1, n2 = observed.offers, baseline.offers
    if not n1 or not n2:
        return Comparison(observed, baseline, 0.0, 0.5)
    pooled = (observed.conversions + baseline.conversions) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance <= 0:
        return Comparison(observed, baseline, 0.0, 0.5)
    z = (observed.conversions / n1 - baseline.conversions / n2) / math.sqrt(variance)
    return Comparison(observed, baseline, z, lower_tail(z))
