"""/api/rates query parsing: known parameters once each, a known view and window size, and
the number of windows in ASCII digits from 1 to 500; anything else is a one-line BadRequest
(the page answers it with 400), never another exception."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.domain.views import CAMPAIGN, CHANNEL_SEGMENT, PURCHASES, VIEW_BY_NAME
from stream_app.serving.web import MAX_WINDOWS, RECENT_WINDOWS, BadRequest, parse_query

LABELS = ("5m", "1h", "1d")


def bad(pairs: list[tuple[str, str]]) -> str:
    with pytest.raises(BadRequest) as raised:
        parse_query(pairs, LABELS)
    message = str(raised.value)
    assert "\n" not in message and len(message) < 300, message
    return message


def test_defaults_and_every_parameter() -> None:
    assert parse_query([], LABELS) == (CHANNEL_SEGMENT, "5m", RECENT_WINDOWS)
    assert parse_query([("view", "campaign"), ("window", "1d"), ("windows", "500")], LABELS) == (
        CAMPAIGN,
        "1d",
        500,
    )
    assert parse_query([("windows", "1"), ("view", "purchases")], LABELS) == (PURCHASES, "5m", 1)


@pytest.mark.parametrize(
    "count",
    [
        "\u00b2",
        "\u0663",
        "\uff11\uff12",
        "1\u00b2",
        "\U0001d7d7",
        "",
        " 5",
        "5 ",
        "-1",
        "0",
        "+3",
        "007",
        "1e2",
        "2.0",
        "0x10",
        "1_0",
        "501",
        "9" * 5000,
        "nan",
    ],
)
def test_malformed_window_counts(count: str) -> None:
    assert "windows" in bad([("windows", count)])


@pytest.mark.parametrize("view", ["", "CHANNEL_SEGMENT", "channel_segment ", "<script>", "rates"])
def test_unknown_views(view: str) -> None:
    assert bad([("view", view)]).startswith("view ")


@pytest.mark.parametrize("window", ["", "7m", "5M", "300s", "1h ", "\u0665m"])
def test_unknown_windows(window: str) -> None:
    assert "is not a configured size (5m, 1h, 1d)" in bad([("window", window)])


def test_unknown_and_repeated_parameters() -> None:
    assert "colour" in bad([("view", "campaign"), ("colour", "red")])
    assert "more than once" in bad([("window", "1h"), ("window", "5m")])
    assert "more than once" in bad([("windows", "3"), ("windows", "3")])


def test_a_huge_value_is_cut_short_in_the_message() -> None:
    message = bad([("view", "v" * 100_000)])
    assert len(message) < 200


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["view", "window", "windows", "other", ""]),
            st.one_of(
                st.text(max_size=12),
                st.sampled_from([*VIEW_BY_NAME, *LABELS, "1", "12", "500", "501", "\u00b2"]),
            ),
        ),
        max_size=4,
    )
)
def test_any_query_is_answered_or_rejected_with_bad_request(pairs: list[tuple[str, str]]) -> None:
    try:
        view, label, count = parse_query(pairs, LABELS)
    except BadRequest:
        return
    # What was accepted is exactly what was asked for.
    asked = dict(pairs)
    assert view is VIEW_BY_NAME[asked.get("view", "channel_segment")]
    assert label == asked.get("window", "5m")
    assert 1 <= count <= MAX_WINDOWS
    assert str(count) == asked.get("windows", str(RECENT_WINDOWS))
