"""Keys of the rates, KPI and alerts topics (contract: "Output topics"): a `|` or `%`
inside a value is written `%7C` / `%25`, so two different records never share a key, and
the records keep the values as they came."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.domain.bands import Bands
from stream_app.domain.board import WindowRecord
from stream_app.domain.drops import FIRED, DropAlert, DropSettings
from stream_app.domain.proportions import Sample, compare
from stream_app.domain.topic_keys import split_topic_key, topic_key
from stream_app.domain.views import CAMPAIGN, CHANNEL_SEGMENT, PURCHASES, View
from stream_app.domain.windows import rfc3339

T0 = 1_795_305_600_000  # 2026-11-22T00:00:00Z
HOUR = 3_600_000
BANDS = Bands.of((0.05, 0.10, 0.20), (0.15, 0.25))

# Values rich in the characters that matter: the separator, the escape and what follows.
values = st.text(alphabet=st.sampled_from("|%7C25a "), max_size=8) | st.text(max_size=8)


def record(view: View, label: str, start: int, first: str, second: str) -> WindowRecord:
    return WindowRecord(
        view, label, start, start + HOUR, (first, second), [0] * len(view.fields), False
    )


def alert(label: str, channel: str, segment: str) -> DropAlert:
    return DropAlert(
        FIRED,
        label,
        T0,
        T0 + HOUR,
        (channel, segment),
        compare(Sample(100, 1), Sample(1000, 100)),
        3,
        T0,
        DropSettings(),
    )


def test_the_collision_of_the_issue_is_two_keys() -> None:
    one = record(CHANNEL_SEGMENT, "1h", T0, "a|b", "c")
    other = record(CHANNEL_SEGMENT, "1h", T0, "a", "b|c")
    assert one.topic_key == "1h|2026-11-22T00:00:00.000Z|a%7Cb|c"
    assert other.topic_key == "1h|2026-11-22T00:00:00.000Z|a|b%7Cc"
    # The records hold the values as they came.
    assert (one.as_json(BANDS, T0)["channel"], one.as_json(BANDS, T0)["segment"]) == ("a|b", "c")
    assert (other.as_json(BANDS, T0)["channel"], other.as_json(BANDS, T0)["segment"]) == (
        "a",
        "b|c",
    )
    assert alert("1h", "a|b", "c").topic_key == "1h|a%7Cb|c"
    assert alert("1h", "a", "b|c").topic_key == "1h|a|b%7Cc"


def test_percent_is_encoded_first() -> None:
    assert topic_key("100%", "a|b") == "100%25|a%7Cb"
    # A value that looks encoded already stays apart from the value it looks like.
    assert topic_key("%7C") == "%257C" != topic_key("|")
    assert topic_key("%25") == "%2525" != topic_key("%")
    assert split_topic_key("100%25|a%7Cb|%257C|%2525") == ["100%", "a|b", "%7C", "%25"]


def test_plain_values_are_unchanged() -> None:
    assert (
        record(CHANNEL_SEGMENT, "5m", T0, "email", "smb").topic_key
        == "5m|2026-11-22T00:00:00.000Z|email|smb"
    )
    assert (
        record(CAMPAIGN, "5m", T0, "email_offer", "__none__").topic_key
        == "campaign|5m|2026-11-22T00:00:00.000Z|email_offer|__none__"
    )


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([CHANNEL_SEGMENT, CAMPAIGN, PURCHASES]),
            st.sampled_from(["5m", "1h"]),
            st.sampled_from([T0, T0 + HOUR]),
            values,
            values,
        ),
        min_size=2,
        max_size=12,
        unique=True,
    )
)
def test_distinct_records_have_distinct_keys_that_round_trip(
    rows: list[tuple[View, str, int, str, str]],
) -> None:
    keys: dict[str, tuple[View, str, int, str, str]] = {}
    for view, label, start, first, second in rows:
        key = record(view, label, start, first, second).topic_key
        assert key not in keys, (key, keys.get(key))
        keys[key] = (view, label, start, first, second)
        decoded = split_topic_key(key)
        expected = [label, rfc3339(start), first, second]
        assert decoded == (expected if view is CHANNEL_SEGMENT else [view.name, *expected])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["5m", "1h"]), values, values),
        min_size=2,
        max_size=12,
        unique=True,
    )
)
def test_distinct_alert_series_have_distinct_keys_that_round_trip(
    series: list[tuple[str, str, str]],
) -> None:
    keys = {alert(*one).topic_key for one in series}
    assert len(keys) == len(series)
    assert {tuple(split_topic_key(key)) for key in keys} == set(series)


@given(st.lists(values, max_size=6))
def test_any_values_round_trip(parts: list[str]) -> None:
    assert split_topic_key(topic_key(*parts)) == (parts or [""])
