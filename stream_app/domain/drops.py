"""In-stream rate-drop detection: each window against earlier windows of its key, at one age.

A window's conversions keep arriving long after it closes (up to the attribution
window), so its rate grows with its age. Comparing a young window with older, more
complete ones would find a "drop" in every window. Here every window of a size is
measured once, when the stream time every partition has reached (the board's low
watermark) passes its end + `age`: the rate of each (channel, segment) key at that age
is compared with the summed offers and conversions of the same key's previous
`baseline_windows` windows, each measured at that same age. Delays that are steady
over time then scale every window alike and cancel out.

    offers:    |--- w-3 ---|--- w-2 ---|--- w-1 ---|---- w ----|
    measured:              ^ w-3 at age     ^ w-1 at age      ^ w at age
                           (end + age)                        (compared with w-3..w-1)

A key's window is a drop when both sides have at least `min_offers` offers, the
one-sided two-proportion test (proportions.py) gives p < `significance`, and the rate is
at least `min_relative_drop` below the baseline's. The first drop fires an alert;
while it is active the baseline stays frozen (drop windows never become the new normal),
and it resolves on the first window that is clearly normal again: p >= significance and
less than `min_relative_drop` below the baseline. Anything in between (too few offers, a
significant but small dip, a large but uncertain one) keeps the state as it is.

The state (each key's baseline samples, active alerts, alert counts, and how far each
size is tested) is persisted with the board's, under its own keys.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from stream_app.domain.durations import format_duration
from stream_app.domain.proportions import Comparison, Sample, compare
from stream_app.domain.topic_keys import topic_key
from stream_app.domain.views import CHANNEL_SEGMENT, Key
from stream_app.domain.windows import passes, rfc3339

if TYPE_CHECKING:
    from stream_app.domain.board import RatesBoard

FIRED: Final = "fired"
RESOLVED: Final = "resolved"
STATES: Final = (FIRED, RESOLVED)
State = Literal["fired", "resolved"]

_SERIES = "ds|"
_TESTED = "dt|"
_OFFERS = CHANNEL_SEGMENT.index("offers")
_CONVERSIONS = CHANNEL_SEGMENT.index("conversions")

Series = tuple[str, Key]  # (window label, (channel, segment))


@dataclass(frozen=True, slots=True)
class DropSettings:
    significance: float = 0.0001
    min_offers: int = 200
    min_relative_drop: float = 0.2
    baseline_windows: int = 6
    # Event time after a window's end at which it is measured; at least the grace (so the
    # window is closed) and at most attribution window + grace (it is forgotten then).
    age_ms: int = 60_000

    def __post_init__(self) -> None:
        if not 0 < self.significance < 1:
            raise ValueError(f"significance {self.significance} must lie between 0 and 1")
        if self.min_offers < 1:
            raise ValueError(f"minimum offers {self.min_offers} must be 1 or more")
        if not 0 <= self.min_relative_drop < 1:
            raise ValueError(f"minimum relative drop {self.min_relative_drop} must lie in [0, 1)")
        if self.baseline_windows < 1:
            raise ValueError(f"baseline windows {self.baseline_windows} must be 1 or more")
        if self.age_ms < 0:
            raise ValueError(f"age {self.age_ms} ms must be >= 0")


Verdict = Literal["drop", "normal", "unclear"]


def verdict(comparison: Comparison, settings: DropSettings) -> Verdict:
    if min(comparison.observed.offers, comparison.baseline.offers) < settings.min_offers:
        return "unclear"
    relative = comparison.relative_drop
    large = relative is not None and relative >= settings.min_relative_drop
    significant = comparison.p_value < settings.significance
    if significant and large:
        return "drop"
    if not significant and not large:
        return "normal"
    return "unclear"


@dataclass(frozen=True, slots=True)
class DropAlert:
    """A fired or resolved alert of one key of one window size, as the alerts topic has it."""

    state: State
    label: str
    start: int
    end: int
    key: Key
    comparison: Comparison
    baseline_windows: int
    fired_start: int
    settings: DropSettings

    @property
    def topic_key(self) -> str:
        """`<window>|<channel>|<segment>` (encoded by topic_keys.py): one key per alerting
        series, fired then resolved."""
        return topic_key(self.label, *self.key)

    @property
    def reason(self) -> str:
        c, s = self.comparison, self.settings
        observed, baseline = c.observed, c.baseline
        relative = c.relative_drop or 0.0
        direction = f"{relative:.0%} below" if relative >= 0 else f"{-relative:.0%} above"
        head = (
            f"{self.key[0]}/{self.key[1]} {self.label} window {rfc3339(self.start)}: rate "
            f"{observed.rate or 0:.4f} ({observed.conversions}/{observed.offers}) is {direction} "
            f"the baseline {baseline.rate or 0:.4f} ({baseline.conversions}/{baseline.offers} "
            f"over {self.baseline_windows} windows), both at age "
            f"{format_duration(s.age_ms)}; z = {c.z:.2f}, one-sided p = {c.p_value:.2g}"
        )
        if self.state == FIRED:
            return (
                f"{head} < {s.significance:g} and at least "
                f"{s.min_relative_drop:.0%} below: a significant drop"
            )
        return (
            f"{head} >= {s.significance:g} and less than {s.min_relative_drop:.0%} below: "
            f"back to normal"
        )

    def as_json(self, emitted_at_ms: int) -> dict[str, Any]:
        c = self.comparison
        return {
            "state": self.state,
            "window": self.label,
            "window_start": rfc3339(self.start),
            "window_end": rfc3339(self.end),
            "channel": self.key[0],
            "segment": self.key[1],
            "age": format_duration(self.settings.age_ms),
            "observed_rate": c.observed.rate,
            "observed_offers": c.observed.offers,
            "observed_conversions": c.observed.conversions,
            "baseline_rate": c.baseline.rate,
            "baseline_offers": c.baseline.offers,
            "baseline_conversions": c.baseline.conversions,
            "baseline_windows": self.baseline_windows,
            "relative_drop": c.relative_drop,
            "z": c.z,
            "p_value": c.p_value,
            "significance": self.settings.significance,
            "min_relative_drop": self.settings.min_relative_drop,
            "fired_window_start": rfc3339(self.fired_start),
            "reason": self.reason,
            "emitted_at": rfc3339(emitted_at_ms),
        }


@dataclass(slots=True)
class _SeriesState:
    baseline: deque[Sample]
    firing: int | None = None  # start of the window whose drop fired the active alert
    fired: int = 0
    resolved: int = 0

    def summed(self) -> Sample:
        baseline = self.baseline
        return Sample(sum(s.offers for s in baseline), sum(s.conversions for s in baseline))


@dataclass(slots=True)
class DropDetector:
    settings: DropSettings
    _series: dict[Series, _SeriesState] = field(default_factory=dict)
    _tested_through: dict[str, int] = field(default_factory=dict)
    _changed_series: set[Series] = field(default_factory=set)
    _changed_labels: set[str] = field(default_factory=set)

    def take_alerts(self, board: RatesBoard) -> list[DropAlert]:
        """Measure every window of the board that reached the age since the last call.

        Call before the board's take_published (or take_records), which forgets final windows.
        """
        watermark = board.low_watermark
        alerts: list[DropAlert] = []
        for label, size in board.config.sizes:
            tested = self._tested_through.get(label)
            for start in board.retained(CHANNEL_SEGMENT, label):
                if tested is not None and start <= tested:
                    continue
                end = start + size
                if not passes(watermark, end + self.settings.age_ms):
                    break  # starts ascend: no later window is old enough either
                vectors = board.window(CHANNEL_SEGMENT, (label, start))
                samples = {key: Sample(v[_OFFERS], v[_CONVERSIONS]) for key, v in vectors.items()}
                alerts.extend(self.observe(label, start, end, samples))
        return alerts

    def observe(
        self, label: str, start: int, end: int, samples: Mapping[Key, Sample]
    ) -> list[DropAlert]:
        """One window of one size, every key measured at the age: the alerts it causes."""
        self._tested_through[label] = max(start, self._tested_through.get(label, start))
        self._changed_labels.add(label)
        alerts: list[DropAlert] = []
        for key in sorted(samples):
            sample = samples[key]
            series = (label, key)
            state = self._series.get(series)
            if state is None:
                state = self._series[series] = _SeriesState(
                    deque(maxlen=self.settings.baseline_windows)
                )
            comparison = compare(sample, state.summed())
            outcome = verdict(comparison, self.settings)
            windows = len(state.baseline)
            if outcome == "drop" and state.firing is None:
                state.firing = start
                state.fired += 1
                alerts.append(
                    DropAlert(
                        FIRED, label, start, end, key, comparison, windows, start, self.settings
                    )
                )
            elif outcome == "normal" and state.firing is not None:
                alerts.append(
                    DropAlert(
                        RESOLVED,
                        label,
                        start,
                        end,
                        key,
                        comparison,
                        windows,
                        state.firing,
                        self.settings,
                    )
                )
                state.firing = None
                state.resolved += 1
            if outcome != "drop" and state.firing is None:
                state.baseline.append(sample)
            self._changed_series.add(series)
        return alerts

    # -- what the metrics show -----------------------------------------------------------
    def active(self) -> Iterator[tuple[str, Key, bool]]:
        """(window label, key, whether a drop alert is active) of every series seen."""
        for (label, key), state in sorted(self._series.items()):
            yield label, key, state.firing is not None

    def alert_counts(self) -> Iterator[tuple[str, Key, State, int]]:
        """(window label, key, state, alerts so far), both states of every series seen."""
        for (label, key), state in sorted(self._series.items()):
            yield label, key, FIRED, state.fired
            yield label, key, RESOLVED, state.resolved

    # -- persistence ---------------------------------------------------------------------
    def take_changes(self) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        for label, key in self._changed_series:
            state = self._series[(label, key)]
            changes[_SERIES + json.dumps([label, *key], separators=(",", ":"))] = [
                [[s.offers, s.conversions] for s in state.baseline],
                state.firing,
                state.fired,
                state.resolved,
            ]
        for label in self._changed_labels:
            changes[_TESTED + label] = self._tested_through[label]
        self._changed_series.clear()
        self._changed_labels.clear()
        return changes

    @classmethod
    def restore(cls, settings: DropSettings, entries: Mapping[str, Any]) -> DropDetector:
        """From the board's stored entries (the detector's own keys; others are ignored)."""
        detector = cls(settings)
        for entry, value in entries.items():
            if value is None:
                continue
            if entry.startswith(_TESTED):
                detector._tested_through[entry[len(_TESTED) :]] = value
            elif entry.startswith(_SERIES):
                label, first, second = json.loads(entry[len(_SERIES) :])
                baseline, firing, fired, resolved = value
                # A changed setting takes effect at once: keep only the newest windows.
                samples = deque(
                    (Sample(o, c) for o, c in baseline), maxlen=settings.baseline_windows
                )
                detector._series[(label, (first, second))] = _SeriesState(
                    samples, firing, fired, resolved
                )
        return detector
