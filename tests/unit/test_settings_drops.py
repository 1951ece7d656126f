"""The rate-drop settings: defaults, parsing, and one-line errors naming the variable."""

from __future__ import annotations

import pytest

from stream_app.domain.drops import DropSettings
from stream_app.settings import Settings, SettingsError


def test_defaults_measure_windows_at_close() -> None:
    drops = Settings.from_env({}).drops
    assert drops == DropSettings(
        significance=0.0001,
        min_offers=200,
        min_relative_drop=0.2,
        baseline_windows=6,
        age_ms=60_000,
    )
    # The age follows the grace unless set.
    assert Settings.from_env({"UPSELL_GRACE": "5s"}).drops.age_ms == 5_000


def test_every_variable_is_read() -> None:
    drops = Settings.from_env(
        {
            "UPSELL_DROP_SIGNIFICANCE": "0.001",
            "UPSELL_DROP_MIN_OFFERS": "50",
            "UPSELL_DROP_MIN_RELATIVE": "0.3",
            "UPSELL_DROP_BASELINE_WINDOWS": "4",
            "UPSELL_DROP_AGE": "3m",
        }
    ).drops
    assert drops == DropSettings(0.001, 50, 0.3, 4, 180_000)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"UPSELL_DROP_SIGNIFICANCE": "0"}, "UPSELL_DROP_SIGNIFICANCE: '0' is not a significance"),
        ({"UPSELL_DROP_SIGNIFICANCE": "5%"}, "UPSELL_DROP_SIGNIFICANCE: '5%' is not"),
        ({"UPSELL_DROP_SIGNIFICANCE": "nan"}, "UPSELL_DROP_SIGNIFICANCE: 'nan' is not"),
        ({"UPSELL_DROP_MIN_RELATIVE": "1"}, "UPSELL_DROP_MIN_RELATIVE: '1' is not a relative drop"),
        ({"UPSELL_DROP_MIN_OFFERS": "0"}, "UPSELL_DROP_MIN_OFFERS: '0' is not a positive"),
        ({"UPSELL_DROP_BASELINE_WINDOWS": "two"}, "UPSELL_DROP_BASELINE_WINDOWS: 'two' is not"),
        ({"UPSELL_DROP_AGE": "30s"}, "UPSELL_DROP_AGE: 30s is shorter than UPSELL_GRACE (1m)"),
        ({"UPSELL_DROP_AGE": "8d"}, "UPSELL_DROP_AGE: 8d is longer than"),
        ({"UPSELL_DROP_AGE": "soon"}, "UPSELL_DROP_AGE: 'soon' is not a duration"),
    ],
)
def test_bad_values_stop_with_one_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)
