"""Benchmark bands: which named band a rate falls in, by the lower bounds of the bands."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Final

CAMPAIGN_BANDS: Final = ("low", "moderate", "good", "excellent")
LOYALTY_BANDS: Final = ("low", "healthy", "exceptional")


@dataclass(frozen=True, slots=True)
class BandScale:
    """`bounds[i]` is the lower bound of `names[i + 1]`; below the first bound is names[0]."""

    scale: str
    names: tuple[str, ...]
    bounds: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.bounds) != len(self.names) - 1:
            raise ValueError(
                f"the {self.scale} scale needs {len(self.names) - 1} lower bounds "
                f"({', '.join(self.names[1:])}), not {len(self.bounds)}"
            )
        if any(not 0 <= bound <= 1 for bound in self.bounds):
            raise ValueError(f"the {self.scale} scale's bounds must lie within [0, 1]")
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError(f"the {self.scale} scale's bounds must increase")

    def band(self, rate: float | None) -> str | None:
        if rate is None:
            return None
        return self.names[bisect_right(self.bounds, rate)]

    def lower_bounds(self) -> dict[str, float]:
        return {"low": 0.0, **dict(zip(self.names[1:], self.bounds, strict=True))}


@dataclass(frozen=True, slots=True)
class Bands:
    campaign: BandScale
    loyalty: BandScale

    @classmethod
    def of(cls, campaign: tuple[float, ...], loyalty: tuple[float, ...]) -> Bands:
        return cls(
            BandScale("campaign", CAMPAIGN_BANDS, campaign),
            BandScale("loyalty", LOYALTY_BANDS, loyalty),
        )


DEFAULT_BANDS: Final = Bands.of((0.05, 0.10, 0.20), (0.15, 0.25))
