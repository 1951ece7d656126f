"""Rate-drop detection (domain/drops.py, domain/proportions.py), pure: no Kafka, no Faust.

The stream model below stands in for the attributing stage: offers spread over each
window, each converting with the window's true rate after an exponential delay, and the
board receiving every window's absolute counts as stream time advances. So windows are
young (few conversions yet) when they close and fill up for tens of minutes after, as in
production, and the detector sees them through the real RatesBoard.

    true rate:  0.10 0.10 0.10 ... 0.10 | 0.05 0.05 ...      (a halving at window k)
    measured:   each window at end + age, against the 6 before it at that same age
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.domain.board import RatesBoard
from stream_app.domain.cohorts import Partial
from stream_app.domain.drops import FIRED, RESOLVED, DropAlert, DropDetector, DropSettings, verdict
from stream_app.domain.proportions import Sample, compare, lower_tail
from stream_app.domain.views import CHANNEL_SEGMENT, Key
from stream_app.domain.window_config import WindowConfig

SECOND = 1_000
MINUTE = 60 * SECOND
T0 = 1_795_305_600_000  # 2026-11-22T00:00:00Z
WINDOW = MINUTE
CONFIG = WindowConfig(sizes=(("1m", WINDOW),), attribution_ms=30 * MINUTE, grace_ms=10 * SECOND)
# Measured 5 minutes after the end: most conversions of the window are in by then.
DEFAULTS = DropSettings(
    significance=0.0001,
    min_offers=200,
    min_relative_drop=0.2,
    baseline_windows=6,
    age_ms=5 * MINUTE,
)
AT_CLOSE = DropSettings(
    significance=0.0001,
    min_offers=200,
    min_relative_drop=0.2,
    baseline_windows=6,
    age_ms=CONFIG.grace_ms,
)
KEY: Key = ("email", "smb")
STEP = 10 * SECOND


@dataclass
class _Window:
    offer_ts: list[int]
    conversion_ts: list[int]


@dataclass
class Stream:
    """Windows of one key, each with its own true rate, fed to a board and a detector."""

    settings: DropSettings = DEFAULTS
    offers_per_window: int = 2_000
    mean_delay_ms: int = 5 * MINUTE
    seed: int = 1
    restart_every_step: bool = False
    alerts: list[DropAlert] = field(default_factory=list)
    measured: dict[int, Sample] = field(default_factory=dict)

    def run(self, rates: list[float]) -> list[DropAlert]:
        rng = random.Random(self.seed)
        windows = [self._window(rng, T0 + i * WINDOW, rate) for i, rate in enumerate(rates)]
        board, detector = RatesBoard(CONFIG, 1), DropDetector(self.settings)
        store: dict[str, Any] = {}
        offset = 0
        horizon = T0 + len(rates) * WINDOW + CONFIG.attribution_ms + CONFIG.grace_ms + STEP
        for now in range(T0 + STEP, horizon + STEP, STEP):
            alive = range(
                max(0, (now - T0 - CONFIG.attribution_ms) // WINDOW - 1),
                min(len(windows), (now - T0) // WINDOW + 1),
            )
            partials = [
                Partial(
                    CHANNEL_SEGMENT.name,
                    "1m",
                    T0 + i * WINDOW,
                    KEY,
                    [
                        _upto(windows[i].offer_ts, now),
                        _upto(windows[i].conversion_ts, now),
                        0,
                        0,
                        0,
                    ],
                )
                for i in alive
                if not CONFIG.is_final(("1m", T0 + i * WINDOW), now)
            ]
            board.apply(0, now, partials, offset)
            offset += 1
            for alert in detector.take_alerts(board):
                self.alerts.append(alert)
            self._note_measured(board, now)
            board.take_records()
            if self.restart_every_step:
                merge_store(store, {**board.take_changes(), **detector.take_changes()})
                board = RatesBoard.restore(CONFIG, 1, dict(store))
                detector = DropDetector.restore(self.settings, store)
        return self.alerts

    def _window(self, rng: random.Random, start: int, rate: float) -> _Window:
        offer_ts = sorted(start + rng.randrange(WINDOW) for _ in range(self.offers_per_window))
        conversions = sorted(
            ts + min(round(rng.expovariate(1 / self.mean_delay_ms)), CONFIG.attribution_ms)
            for ts in offer_ts
            if rng.random() < rate
        )
        return _Window(offer_ts, conversions)

    def _note_measured(self, board: RatesBoard, now: int) -> None:
        for start in board.retained(CHANNEL_SEGMENT, "1m"):
            if start not in self.measured and now > start + WINDOW + self.settings.age_ms:
                vector = board.window(CHANNEL_SEGMENT, ("1m", start))[KEY]
                self.measured[start] = Sample(vector[0], vector[1])


def merge_store(store: dict[str, Any], changes: dict[str, Any]) -> None:
    """What the changelog-backed table does with take_changes: None deletes."""
    for key, value in changes.items():
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value


def _upto(sorted_ts: list[int], now: int) -> int:
    """How many of the times are <= now."""
    lo, hi = 0, len(sorted_ts)
    while lo < hi:
        mid = (lo + hi) // 2
        if sorted_ts[mid] <= now:
            lo = mid + 1
        else:
            hi = mid
    return lo


def window_index(alert: DropAlert) -> int:
    return (alert.start - T0) // WINDOW


# -- the statistic -----------------------------------------------------------------------


def test_z_statistic_matches_the_textbook_formula() -> None:
    # 30/500 against 240/2000: pooled p = 270/2500 = 0.108.
    result = compare(Sample(500, 30), Sample(2000, 240))
    expected = (0.06 - 0.12) / math.sqrt(0.108 * 0.892 * (1 / 500 + 1 / 2000))
    assert result.z == pytest.approx(expected)
    assert result.p_value == pytest.approx(lower_tail(expected))
    assert result.relative_drop == pytest.approx(0.5)
    assert lower_tail(-1.959964) == pytest.approx(0.025, abs=1e-6)


def test_no_evidence_without_offers_or_variation() -> None:
    for observed, baseline in [
        (Sample(0, 0), Sample(100, 5)),
        (Sample(100, 0), Sample(100, 0)),
        (Sample(50, 50), Sample(80, 80)),
    ]:
        result = compare(observed, baseline)
        assert (result.z, result.p_value) == (0.0, 0.5)


@given(st.integers(1, 5_000), st.integers(1, 5_000), st.data())
def test_fewer_conversions_are_never_less_significant(n1: int, n2: int, data: Any) -> None:
    x2 = data.draw(st.integers(0, n2))
    x1 = data.draw(st.integers(1, n1))
    fewer = compare(Sample(n1, x1 - 1), Sample(n2, x2))
    more = compare(Sample(n1, x1), Sample(n2, x2))
    assert fewer.p_value <= more.p_value + 1e-12


# -- verdicts ------------------------------------------------------------------------------


samples = st.builds(
    lambda n, share: Sample(n, round(n * share)), st.integers(0, 100_000), st.floats(0, 1)
)


@given(samples, samples)
def test_small_samples_are_never_a_drop(observed: Sample, baseline: Sample) -> None:
    small = Sample(
        observed.offers % DEFAULTS.min_offers,
        min(observed.conversions, observed.offers % DEFAULTS.min_offers),
    )
    assert verdict(compare(small, baseline), DEFAULTS) == "unclear"
    assert verdict(compare(baseline, small), DEFAULTS) == "unclear"


@given(samples, samples)
def test_a_rate_within_the_minimum_relative_drop_is_never_a_drop(
    observed: Sample, baseline: Sample
) -> None:
    result = compare(observed, baseline)
    relative = result.relative_drop
    if relative is None or relative < DEFAULTS.min_relative_drop:
        assert verdict(result, DEFAULTS) != "drop"


@given(st.integers(200, 100_000), st.integers(200, 100_000), st.floats(0.001, 1), st.data())
def test_a_rise_is_never_a_drop(n1: int, n2: int, baseline_rate: float, data: Any) -> None:
    x2 = round(n2 * baseline_rate)
    x1 = data.draw(st.integers(math.ceil(n1 * x2 / n2), n1))
    assert verdict(compare(Sample(n1, x1), Sample(n2, x2)), DEFAULTS) != "drop"


def test_settings_are_validated() -> None:
    bad_values: list[dict[str, Any]] = [
        {"significance": 0.0},
        {"significance": 1.0},
        {"min_offers": 0},
        {"min_relative_drop": 1.0},
        {"min_relative_drop": -0.1},
        {"baseline_windows": 0},
        {"age_ms": -1},
    ]
    for bad in bad_values:
        with pytest.raises(ValueError, match=r"must"):
            DropSettings(**bad)


# -- the detector over a stream ------------------------------------------------------------


@pytest.mark.parametrize(
    ("drops", "seed", "complete"), [(DEFAULTS, 1, 0.75), (DEFAULTS, 2, 0.75), (AT_CLOSE, 3, 0.2)]
)
def test_a_steady_rate_with_delayed_conversions_never_alerts(
    drops: DropSettings, seed: int, complete: float
) -> None:
    stream = Stream(settings=drops, seed=seed)
    assert stream.run([0.10] * 150) == []
    # At its age a window holds only part of the conversions it will have (mean delay
    # 5 min, 1 min windows): against complete windows every young one would look like a
    # drop. The detector measures all of them at the same age.
    young = [s for s in stream.measured.values() if s.offers]
    assert len(young) == 150
    mean_young_rate = sum(s.rate or 0 for s in young) / len(young)
    assert mean_young_rate < complete * 0.10
    naive = compare(young[-1], Sample(2_000 * 6, 2_000 * 6 // 10))
    assert verdict(naive, drops) == "drop"


def test_a_halved_rate_alerts_within_two_windows() -> None:
    alerts = Stream(seed=4).run([0.10] * 20 + [0.05] * 20)
    fired = [a for a in alerts if a.state == FIRED]
    assert [a.state for a in alerts] == [FIRED], alerts
    # Window 20 is the first at the halved rate; window 21 at the latest.
    assert 20 <= window_index(fired[0]) <= 21
    assert fired[0].comparison.relative_drop is not None
    assert fired[0].comparison.relative_drop > 0.3


@pytest.mark.parametrize(
    ("drops", "mean_delay_ms"), [(AT_CLOSE, 20 * SECOND), (DEFAULTS, 2 * MINUTE)]
)
def test_a_halved_rate_alerts_whatever_the_age_of_measurement(
    drops: DropSettings, mean_delay_ms: int
) -> None:
    stream = Stream(settings=drops, mean_delay_ms=mean_delay_ms, seed=5)
    alerts = stream.run([0.10] * 20 + [0.05] * 15)
    assert [(a.state, window_index(a)) for a in alerts][:1] in ([(FIRED, 20)], [(FIRED, 21)])


@given(
    st.integers(1, DEFAULTS.min_offers - 1),
    st.lists(st.floats(0, 1), min_size=10, max_size=30),
    st.integers(0, 2**16),
)
@settings(max_examples=25, deadline=None)
def test_small_samples_never_alert(offers: int, rates: list[float], seed: int) -> None:
    assert Stream(offers_per_window=offers, seed=seed).run(rates) == []


def test_a_recovery_resolves_the_alert_and_the_baseline_stays_frozen_meanwhile() -> None:
    alerts = Stream(seed=6).run([0.10] * 15 + [0.04] * 8 + [0.10] * 8)
    assert [a.state for a in alerts] == [FIRED, RESOLVED]
    fired, resolved = alerts
    assert 15 <= window_index(fired) <= 16
    assert 23 <= window_index(resolved) <= 24
    assert resolved.fired_start == fired.start
    # The eight drop windows did not enter the baseline: it is still the 0.10 one.
    assert resolved.comparison.baseline == fired.comparison.baseline
    assert resolved.topic_key == fired.topic_key == "1m|email|smb"


def test_restarting_after_every_step_changes_nothing() -> None:
    rates = [0.10] * 12 + [0.04] * 5 + [0.10] * 6
    straight = Stream(seed=7).run(rates)
    restarted = Stream(seed=7, restart_every_step=True).run(rates)
    assert [a.state for a in straight] == [FIRED, RESOLVED]
    assert restarted == straight


def test_a_window_waits_for_every_partition_to_reach_its_age() -> None:
    board, detector = RatesBoard(CONFIG, 2), DropDetector(DEFAULTS)
    end = T0 + WINDOW
    board.apply(
        0,
        end + DEFAULTS.age_ms + 1,
        [Partial(CHANNEL_SEGMENT.name, "1m", T0, KEY, [300, 30, 0, 0, 0])],
        0,
    )
    assert detector.take_alerts(board) == []
    assert list(detector.active()) == []
    board.apply(1, end + DEFAULTS.age_ms, [], 1)  # not past the age yet
    assert detector.take_alerts(board) == []
    board.apply(1, end + DEFAULTS.age_ms + 1, [], 2)
    assert detector.take_alerts(board) == []  # a first window is only a baseline
    assert list(detector.active()) == [("1m", KEY, False)]


def test_the_alert_record() -> None:
    detector = DropDetector(DEFAULTS)
    for i in range(6):
        detector.observe("1m", T0 + i * WINDOW, T0 + (i + 1) * WINDOW, {KEY: Sample(1000, 100)})
    (alert,) = detector.observe("1m", T0 + 6 * WINDOW, T0 + 7 * WINDOW, {KEY: Sample(1000, 40)})
    record = alert.as_json(T0 + 8 * WINDOW)
    assert record == {
        "state": "fired",
        "window": "1m",
        "window_start": "2026-11-22T00:06:00.000Z",
        "window_end": "2026-11-22T00:07:00.000Z",
        "channel": "email",
        "segment": "smb",
        "age": "5m",
        "observed_rate": 0.04,
        "observed_offers": 1000,
        "observed_conversions": 40,
        "baseline_rate": 0.1,
        "baseline_offers": 6000,
        "baseline_conversions": 600,
        "baseline_windows": 6,
        "relative_drop": pytest.approx(0.6),
        "z": pytest.approx(alert.comparison.z),
        "p_value": pytest.approx(alert.comparison.p_value),
        "significance": 0.0001,
        "min_relative_drop": 0.2,
        "fired_window_start": "2026-11-22T00:06:00.000Z",
        "reason": alert.reason,
        "emitted_at": "2026-11-22T00:08:00.000Z",
    }
    assert alert.comparison.z < -6
    assert "60% below the baseline 0.1000 (600/6000 over 6 windows)" in alert.reason
    assert list(detector.alert_counts()) == [("1m", KEY, FIRED, 1), ("1m", KEY, RESOLVED, 0)]
    assert list(detector.active()) == [("1m", KEY, True)]
