"""Which purchase converts which offer, driven through CustomerPartition.apply.

Contract, "Semantics" / Attribution: same customer, 0 <= purchase.ts - offer.ts <=
attribution window, and either the purchase names the offer or it names none, is an
upsell and the offer is the customer's most recent unconverted one (last touch). Windows
here: 5m and 1h, attribution 7 days, grace 60 s.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.domain.attribution import Attribution, OfferRef
from stream_app.domain.events import Event
from stream_app.domain.partition import CustomerPartition
from stream_app.domain.totals import CONVERSIONS_TOTAL, OFFERS_TOTAL, REVENUE_TOTAL
from stream_app.domain.views import ALL
from stream_app.domain.window_config import WindowConfig
from tests.unit.conftest import (
    CONFIG,
    DAY,
    HOUR,
    MINUTE,
    SECOND,
    SIZES,
    T0,
    Feed,
    new_feed,
    offer,
    purchase,
    vector,
)

GRACE = CONFIG.grace_ms
ATTRIBUTION = CONFIG.attribution_ms
EMAIL = ("email", "smb")
SMS = ("sms", "smb")
PUSH = ("push", "enterprise")


def conversions(feed: Feed) -> dict[tuple[str, ...], int]:
    return {pair: n for pair, n in feed.partition.totals[CONVERSIONS_TOTAL].items() if n}


def revenue(feed: Feed) -> dict[tuple[str, ...], int]:
    return {pair: n for pair, n in feed.partition.totals[REVENUE_TOTAL].items() if n}


def cohort(feed: Feed, ts: int, key: tuple[str, str]) -> list[list[int]]:
    """The vectors of one channel/segment key in the windows of every size holding ts."""
    return [vector(feed, label, ts - ts % size, key) for label, size in SIZES]


def flush(feed: Feed, last_ts: int) -> None:
    """A tick that decides every last-touch purchase made up to last_ts."""
    feed.tick(last_ts + GRACE + 1)


# -- explicit offer_id ----------------------------------------------------------------


def test_explicit_offer_id_converts_at_once() -> None:
    feed = new_feed()
    feed.send(offer("o1", "alice", T0 + 10 * SECOND, offer_id="X"))
    feed.send(purchase("p1", "alice", T0 + 2 * MINUTE, offer_id="X", amount_micros=25_500_000))
    assert conversions(feed) == {EMAIL: 1}
    assert revenue(feed) == {EMAIL: 25_500_000}
    # offers, conversions, revenue, customers targeted, customers upsold
    assert cohort(feed, T0, EMAIL) == [[1, 1, 25_500_000, 1, 1]] * 2
    assert cohort(feed, T0, (ALL, ALL)) == [[1, 1, 25_500_000, 1, 1]] * 2


def test_purchase_arriving_before_its_offer_converts_when_the_offer_arrives() -> None:
    feed = new_feed()
    # The purchase is in the [T0+5m, T0+10m) window, its offer in [T0, T0+5m): the
    # conversion counts in the offer's windows (cohort), not the purchase's.
    feed.send(
        purchase(
            "p1", "alice", T0 + 5 * MINUTE + 30 * SECOND, offer_id="X", amount_micros=3_000_000
        )
    )
    assert conversions(feed) == {}
    feed.send(offer("o1", "alice", T0 + 4 * MINUTE, offer_id="X"))
    assert conversions(feed) == {EMAIL: 1}
    assert revenue(feed) == {EMAIL: 3_000_000}
    assert cohort(feed, T0, EMAIL) == [[1, 1, 3_000_000, 1, 1]] * 2
    assert vector(feed, "5m", T0 + 5 * MINUTE, EMAIL) == []


def test_explicit_purchase_converts_even_when_is_upsell_false() -> None:
    # "either purchase.offer_id is that offer's offer_id, or ..." - is_upsell only matters
    # for last touch.
    feed = new_feed()
    feed.send(offer("o1", "alice", T0, offer_id="X"))
    feed.send(purchase("p1", "alice", T0 + MINUTE, offer_id="X", is_upsell=False))
    assert conversions(feed) == {EMAIL: 1}


@pytest.mark.parametrize("delta", [0, 1, ATTRIBUTION - 1, ATTRIBUTION])
def test_explicit_within_attribution_window_converts(delta: int) -> None:
    feed = new_feed()
    feed.send(offer("o1", "alice", T0, offer_id="X"))
    feed.send(purchase("p1", "alice", T0 + delta, offer_id="X"))
    assert conversions(feed) == {EMAIL: 1}


@pytest.mark.parametrize("delta", [-1, -MINUTE, ATTRIBUTION + 1, 30 * DAY])
@pytest.mark.parametrize("offer_first", [True, False])
def test_explicit_outside_attribution_window_converts_nothing(
    delta: int, offer_first: bool
) -> None:
    feed = new_feed()
    events: list[Event] = [
        offer("o1", "alice", T0, offer_id="X"),
        purchase("p1", "alice", T0 + delta, offer_id="X"),
    ]
    feed.send_all(events if offer_first else events[::-1])
    flush(feed, T0 + max(delta, 0))
    assert conversions(feed) == {}
    assert feed.partition.totals[OFFERS_TOTAL] == {EMAIL: 1}


def test_explicit_naming_another_customers_offer_converts_nothing() -> None:
    feed = new_feed()
    feed.send(offer("o1", "alice", T0, offer_id="X"))
    feed.send(purchase("p1", "bob", T0 + MINUTE, offer_id="X"))
    flush(feed, T0 + MINUTE)
    assert conversions(feed) == {}
    # ... and alice's own later purchase still can.
    feed.send(purchase("p2", "alice", T0 + 3 * MINUTE, offer_id="X"))
    assert conversions(feed) == {EMAIL: 1}


def test_explicit_naming_an_unknown_offer_does_not_fall_back_to_last_touch() -> None:
    feed = new_feed()
    feed.send(offer("o1", "alice", T0, offer_id="X"))
    feed.send(purchase("p1", "alice", T0 + MINUTE, offer_id="nope"))
    flush(feed, T0 + MINUTE)
    assert conversions(feed) == {}


def test_an_offer_converts_at_most_once() -> None:
    feed = new_feed()
    feed.send(offer("o1", "alice", T0, offer_id="X"))
    feed.send(purchase("p1", "alice", T0 + MINUTE, offer_id="X", amount_micros=10))
    feed.send(purchase("p2", "alice", T0 + 2 * MINUTE, offer_id="X", amount_micros=20))
    feed.send(purchase("p3", "alice", T0 + 3 * MINUTE, is_upsell=True, amount_micros=40))
    flush(feed, T0 + 3 * MINUTE)
    assert conversions(feed) == {EMAIL: 1}
    assert revenue(feed) == {EMAIL: 10}
    assert cohort(feed, T0, EMAIL) == [[1, 1, 10, 1, 1]] * 2


def test_waiting_purchases_naming_one_offer_convert_it_in_event_order() -> None:
    feed = new_feed()
    feed.send(purchase("p2", "alice", T0 + 2 * MINUTE, offer_id="X", amount_micros=20))
    feed.send(purchase("p1", "alice", T0 + MINUTE, offer_id="X", amount_micros=10))
    feed.send(offer("o1", "alice", T0, offer_id="X"))
    assert revenue(feed) == {EMAIL: 10}


# -- last touch -----------------------------------------------------------------------


def test_last_touch_waits_for_grace_then_picks_most_recent_unconverted_offer() -> None:
    feed = new_feed()
    feed.send(offer("o1", "alice", T0, offer_id="A", channel="email"))
    feed.send(offer("o2", "alice", T0 + MINUTE, offer_id="B", channel="sms"))
    feed.send(
        offer("o3", "alice", T0 + 2 * MINUTE, offer_id="C", channel="push", segment="enterprise")
    )
    feed.send(offer("o4", "bob", T0 + 150 * SECOND, offer_id="D", channel="email"))
    feed.send(purchase("p0", "alice", T0 + 150 * SECOND, offer_id="C", amount_micros=1))
    assert conversions(feed) == {PUSH: 1}
    paid = T0 + 3 * MINUTE
    feed.send(purchase("p1", "alice", paid, is_upsell=True, amount_micros=7))
    # Not decided while stream time has not passed ts + grace ...
    feed.tick(paid + GRACE)
    assert conversions(feed) == {PUSH: 1}
    # ... and decided once it has: C is converted, B is alice's most recent unconverted.
    feed.tick(paid + GRACE + 1)
    assert conversions(feed) == {PUSH: 1, SMS: 1}
    assert revenue(feed) == {PUSH: 1, SMS: 7}
    for label in ("5m", "1h"):
        assert vector(feed, label, T0, EMAIL) == [2, 0, 0, 2, 0]  # alice and bob
        assert vector(feed, label, T0, SMS) == [1, 1, 7, 1, 1]
        assert vector(feed, label, T0, PUSH) == [1, 1, 1, 1, 1]
        assert vector(feed, label, T0, (ALL, "smb")) == [3, 1, 7, 2, 1]
        assert vector(feed, label, T0, (ALL, ALL)) == [4, 2, 8, 2, 1]  # alice counted once


def test_last_touch_ignores_offers_after_the_purchase() -> None:
    feed = new_feed()
    feed.send(offer("o1", "alice", T0, offer_id="A", channel="email"))
    feed.send(offer("o2", "alice", T0 + 2 * MINUTE, offer_id="B", channel="sms"))
    feed.send(purchase("p1", "alice", T0 + MINUTE, is_upsell=True))
    flush(feed, T0 + 2 * MINUTE)
    assert conversions(feed) == {EMAIL: 1}


def test_last_touch_ties_on_ts_break_by_offer_id() -> None:
    feed = new_feed()
    feed.send(offer("o1", "alice", T0, offer_id="B", channel="sms"))
    feed.send(offer("o2", "alice", T0, offer_id="A", channel="email"))
    feed.send(purchase("p1", "alice", T0 + MINUTE, is_upsell=True))
    flush(feed, T0 + MINUTE)
    assert conversions(feed) == {SMS: 1}


def test_a_purchase_converts_at_most_one_offer() -> None:
    feed = new_feed()
    for i in range(3):
        feed.send(offer(f"o{i}", "alice", T0 + i * SECOND, offer_id=f"X{i}"))
    feed.send(purchase("p1", "alice", T0 + MINUTE, is_upsell=True, amount_micros=5))
    flush(feed, T0 + MINUTE)
    assert conversions(feed) == {EMAIL: 1}
    assert revenue(feed) == {EMAIL: 5}


@pytest.mark.parametrize("is_upsell", [False, None])
def test_not_an_upsell_never_converts(is_upsell: bool | None) -> None:
    feed = new_feed()
    feed.send(offer("o1", "alice", T0, offer_id="X"))
    feed.send(purchase("p1", "alice", T0 + MINUTE, is_upsell=is_upsell))
    flush(feed, T0 + HOUR)
    assert conversions(feed) == {}
    assert cohort(feed, T0, EMAIL) == [[1, 0, 0, 1, 0]] * 2


def test_last_touch_never_takes_another_customers_offer() -> None:
    feed = new_feed()
    feed.send(offer("o1", "alice", T0, offer_id="X"))
    feed.send(purchase("p1", "bob", T0 + MINUTE, is_upsell=True))
    flush(feed, T0 + MINUTE)
    assert conversions(feed) == {}


@pytest.mark.parametrize("delta", [ATTRIBUTION + 1, ATTRIBUTION + HOUR, -1])
def test_last_touch_outside_attribution_window_converts_nothing(delta: int) -> None:
    feed = new_feed()
    feed.send(offer("o1", "alice", T0, offer_id="X"))
    feed.send(purchase("p1", "alice", T0 + delta, is_upsell=True))
    flush(feed, T0 + max(delta, 0))
    assert conversions(feed) == {}


def test_last_touch_near_the_end_of_the_attribution_window_converts() -> None:
    feed = new_feed()
    feed.send(offer("o1", "alice", T0, offer_id="X"))
    paid = T0 + ATTRIBUTION - 30 * SECOND
    feed.send(purchase("p1", "alice", paid, is_upsell=True))
    feed.tick(paid + GRACE + 1)  # the earliest moment it can be decided
    assert conversions(feed) == {EMAIL: 1}


def _two_out_of_order(arrival: list[int]) -> Feed:
    feed = new_feed()
    feed.send(offer("o1", "alice", T0, offer_id="A", channel="email"))
    feed.send(offer("o2", "alice", T0 + MINUTE, offer_id="B", channel="sms"))
    purchases = [
        purchase("p1", "alice", T0 + 2 * MINUTE, is_upsell=True, amount_micros=10),
        purchase("p2", "alice", T0 + 2 * MINUTE + 30 * SECOND, is_upsell=True, amount_micros=20),
    ]
    for i in arrival:
        feed.send(purchases[i])
    flush(feed, T0 + 3 * MINUTE)
    return feed


@pytest.mark.parametrize("arrival", [[0, 1], [1, 0]])
def test_last_touch_purchases_out_of_order_within_grace_match_as_if_in_order(
    arrival: list[int],
) -> None:
    feed = _two_out_of_order(arrival)
    # In order: p1 (earlier) takes B, the most recent; p2 then takes A.
    assert revenue(feed) == {SMS: 10, EMAIL: 20}
    assert conversions(feed) == {SMS: 1, EMAIL: 1}


def test_last_touch_same_ts_decided_by_event_id() -> None:
    feed = new_feed()
    feed.send(offer("o1", "alice", T0, offer_id="A", channel="email"))
    feed.send(offer("o2", "alice", T0 + MINUTE, offer_id="B", channel="sms"))
    feed.send(purchase("pb", "alice", T0 + 2 * MINUTE, is_upsell=True, amount_micros=2))
    feed.send(purchase("pa", "alice", T0 + 2 * MINUTE, is_upsell=True, amount_micros=1))
    flush(feed, T0 + 2 * MINUTE)
    assert revenue(feed) == {SMS: 1, EMAIL: 2}


def test_explicit_purchase_within_grace_wins_over_pending_last_touch() -> None:
    # The explicit purchase converts as soon as both events are there; the last-touch one,
    # decided later, takes the next most recent unconverted offer.
    for order in ([0, 1], [1, 0]):
        feed = new_feed()
        feed.send(offer("o1", "alice", T0, offer_id="A", channel="email"))
        feed.send(offer("o2", "alice", T0 + MINUTE, offer_id="B", channel="sms"))
        purchases = [
            purchase("p1", "alice", T0 + 2 * MINUTE, is_upsell=True, amount_micros=10),
            purchase("p2", "alice", T0 + 2 * MINUTE + 20 * SECOND, offer_id="B", amount_micros=20),
        ]
        for i in order:
            feed.send(purchases[i])
        flush(feed, T0 + 3 * MINUTE)
        assert revenue(feed) == {SMS: 20, EMAIL: 10}, order


def test_conversion_counts_in_closed_window_but_not_after_final() -> None:
    config = WindowConfig(sizes=SIZES, attribution_ms=HOUR, grace_ms=MINUTE)
    feed = Feed(CustomerPartition(config))
    feed.send(offer("o1", "alice", T0, offer_id="X"))
    feed.send(offer("o2", "bob", T0 + 30 * MINUTE, offer_id="Y"))
    # alice's 5m window is closed (stream time > T0 + 6m) but not final: it still counts.
    feed.send(purchase("p1", "alice", T0 + 40 * MINUTE, offer_id="X", amount_micros=9))
    assert vector(feed, "5m", T0, EMAIL) == [1, 1, 9, 1, 1]
    assert vector(feed, "1h", T0, EMAIL) == [2, 1, 9, 2, 1]


# -- regressions and bugs ----------------------------------------------------------------


def test_last_touch_at_exactly_the_attribution_window_converts() -> None:
    # Decided once stream time passes ts + grace = offer.ts + attribution + grace: the
    # offer must still be there for it (it was not, before the offers' expiry moved into
    # Attribution.advance after the last-touch decisions).
    feed = new_feed()
    feed.send(offer("o1", "alice", T0, offer_id="X"))
    paid = T0 + ATTRIBUTION
    feed.send(purchase("p1", "alice", paid, is_upsell=True))
    feed.tick(paid + GRACE + 1)
    assert conversions(feed) == {EMAIL: 1}


def test_last_touch_near_the_end_of_the_window_converts_whatever_comes_next() -> None:
    # In order; the next event is 2 minutes later, past offer.ts + attribution + grace.
    feed = new_feed()
    feed.send(offer("o1", "alice", T0, offer_id="X"))
    paid = T0 + ATTRIBUTION - 30 * SECOND
    feed.send(purchase("p1", "alice", paid, is_upsell=True))
    feed.send(offer("o2", "bob", paid + 2 * MINUTE, offer_id="Y"))  # in order, unrelated
    assert conversions(feed) == {EMAIL: 1}


def test_last_touch_arriving_after_its_grace_is_decided_at_once() -> None:
    feed = new_feed()
    feed.send(offer("o1", "alice", T0, offer_id="X"))
    feed.send(offer("o2", "bob", T0 + 3 * MINUTE, offer_id="Y"))
    # ts T0+1m: its 5m window is still open (closes when stream time > T0+6m), so it is on
    # time, and stream time T0+3m has passed its ts + grace = T0+2m.
    feed.send(purchase("p1", "alice", T0 + MINUTE, is_upsell=True))
    feed.tick(T0 + 3 * MINUTE)
    assert conversions(feed) == {EMAIL: 1}


def _unrelated_event_between(with_unrelated: bool) -> Feed:
    feed = new_feed()
    feed.send(offer("o0", "alice", T0, offer_id="A", channel="email"))
    feed.send(offer("o1", "alice", T0 + 5 * SECOND, offer_id="B", channel="sms"))
    feed.send(purchase("p1", "alice", T0 + 10 * SECOND, is_upsell=True, amount_micros=10))
    if with_unrelated:
        feed.send(
            offer("x", "bob", T0 + 100 * SECOND, offer_id="Z", channel="push", segment="enterprise")
        )
    feed.send(purchase("p2", "alice", T0 + 130 * SECOND, offer_id="B", amount_micros=20))
    flush(feed, T0 + 130 * SECOND)
    return feed


def test_unrelated_event_passing_the_grace_decides_last_touch_first() -> None:
    # Everything arrives in ts order. bob's offer moves stream time past p1.ts + grace,
    # so p1 is decided (takes B) before p2, which names B, arrives.
    feed = _unrelated_event_between(with_unrelated=True)
    assert revenue(feed) == {SMS: 10}


def test_in_order_result_does_not_depend_on_unrelated_customers() -> None:
    # p2 (ts p1.ts + 120 s) passes p1's ts + grace itself: p1 is decided before p2 applies.
    feed = _unrelated_event_between(with_unrelated=False)
    assert revenue(feed) == {SMS: 10}


# -- when an offer is forgotten -------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(
                st.just("offer"),
                st.sampled_from("abc"),
                st.sampled_from("XYZW"),
                st.integers(0, 50),
            ),
            st.tuples(st.just("advance"), st.just(""), st.just(""), st.integers(0, 20)),
        ),
        max_size=60,
    )
)
def test_offers_are_forgotten_once_past_ts_plus_window_plus_grace_in_ts_customer_id_order(
    steps: list[tuple[str, str, str, int]],
) -> None:
    """Whatever order the offers arrive in (in ts order, or below an earlier one's ts)."""
    attribution = Attribution(attribution_ms=20, grace_ms=5)
    # The offers marked changed (the store writes them in that order); a step marks each
    # offer once at most, so the steps' marks in a row are the order of every marking.
    changed: list[OfferRef] = []
    model: dict[OfferRef, int] = {}
    expected: list[OfferRef] = []
    stream_time = 0
    for step, customer, offer_id, n in steps:
        if step == "offer":
            event = offer(f"e-{customer}-{offer_id}-{n}", customer, n, offer_id=offer_id)
            attribution.add_offer(event, ())
            if (customer, offer_id) not in model:
                model[(customer, offer_id)] = n
                expected.append((customer, offer_id))
        else:
            stream_time += n
            attribution.advance(stream_time)
            for ts, ref in sorted((ts, ref) for ref, ts in model.items()):
                if ts + 25 < stream_time:
                    del model[ref]
                    expected.append(ref)
        changed += attribution.take_changed_offers()
        assert changed == expected
        assert len(attribution) == len(model)
        assert {
            (customer, offer_id): ts for customer, offer_id, ts in attribution.open_offers()
        } == model
        for ref in [(c, o) for c in "abc" for o in "XYZW"]:
            assert attribution.has_offer(ref) == (ref in model)
