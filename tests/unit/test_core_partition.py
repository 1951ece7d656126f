"""CustomerPartition: dedupe, stream time, lateness, replays, rejects, the KPI views,
restore, and the properties the contract's "Semantics" imply (order independence, rates
within [0, 1], replay safety, batch boundaries that do not matter).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.domain.events import Event, Offer, Purchase
from stream_app.domain.forwarding import Forwarded
from stream_app.domain.partition import CustomerPartition
from stream_app.domain.totals import (
    CAMPAIGN_OFFERS_TOTAL,
    CONVERSIONS_TOTAL,
    DUPLICATES_TOTAL,
    LATE_TOTAL,
    OFFERS_TOTAL,
    PURCHASE_AMOUNT_TOTAL,
    PURCHASES_TOTAL,
    REJECTED_TOTAL,
    REVENUE_TOTAL,
)
from stream_app.domain.views import ALL, CAMPAIGN, NONE, OFFER_VIEWS, VIEW_BY_NAME
from stream_app.domain.views import PURCHASES as PURCHASES_VIEW
from stream_app.domain.window_config import WindowConfig
from tests.unit.conftest import (
    CONFIG,
    DAY,
    HOUR,
    MINUTE,
    OFFERS_TOPIC,
    PURCHASES_TOPIC,
    SECOND,
    SIZES,
    T0,
    Feed,
    TotalsRows,
    WindowRows,
    canonical_store,
    merge_store,
    new_feed,
    offer,
    purchase,
    reference,
    snapshot,
    totals_rows,
    vector,
)

EMAIL = ("email", "smb")


def total(feed: Feed, name: str) -> dict[tuple[str, ...], int]:
    return totals_rows(feed.partition.totals)[name]


# -- duplicates -------------------------------------------------------------------------


def test_duplicate_offer_changes_nothing_but_the_duplicate_count() -> None:
    feed = new_feed()
    feed.send(offer("e1", "alice", T0 + MINUTE, offer_id="X"))
    totals, windows = snapshot(feed.partition)
    # Same event_id, other content and a later ts: still a duplicate.
    feed.send(Offer("e1", "Y", "bob", "sms", "enterprise", T0 + 20 * MINUTE))
    assert snapshot(feed.partition) == ({**totals, DUPLICATES_TOTAL: {(OFFERS_TOPIC,): 1}}, windows)
    assert feed.partition.stream_time == T0 + MINUTE  # did not move stream time


def test_duplicate_purchase_counted_per_topic_and_converts_nothing() -> None:
    feed = new_feed()
    feed.send(offer("o1", "alice", T0, offer_id="X"))
    feed.send(offer("o2", "alice", T0 + SECOND, offer_id="Y"))
    paid = purchase("p1", "alice", T0 + MINUTE, offer_id="X", amount_micros=5)
    feed.send(paid)
    feed.send(paid)
    feed.send(purchase("p1", "alice", T0 + 2 * MINUTE, offer_id="Y", amount_micros=7))
    feed.send(offer("o1", "alice", T0, offer_id="X"))
    assert total(feed, DUPLICATES_TOTAL) == {(PURCHASES_TOPIC,): 2, (OFFERS_TOPIC,): 1}
    assert total(feed, CONVERSIONS_TOTAL) == {EMAIL: 1}
    assert total(feed, REVENUE_TOTAL) == {EMAIL: 5}
    assert total(feed, OFFERS_TOTAL) == {EMAIL: 2}
    assert total(feed, PURCHASES_TOTAL) == {("upsell", "unknown", NONE): 1}
    assert feed.partition.stream_time == T0 + MINUTE


def test_duplicate_memory_lasts_the_attribution_window() -> None:
    feed = new_feed()
    feed.send(offer("e1", "alice", T0, offer_id="X"))
    feed.tick(T0 + CONFIG.attribution_ms)
    feed.send(offer("e1", "alice", T0, offer_id="X"))  # still remembered
    assert total(feed, DUPLICATES_TOTAL) == {(OFFERS_TOPIC,): 1}
    feed.tick(T0 + CONFIG.attribution_ms + 1)
    feed.send(offer("e1", "alice", T0 + CONFIG.attribution_ms + 1, offer_id="X2"))
    assert total(feed, DUPLICATES_TOTAL) == {(OFFERS_TOPIC,): 1}
    assert total(feed, OFFERS_TOTAL) == {EMAIL: 2}


def test_a_rejected_message_is_not_remembered() -> None:
    feed = new_feed()
    feed.reject(OFFERS_TOPIC, "wrong_type")
    feed.send(offer("e1", "alice", T0, offer_id="X"))
    assert total(feed, DUPLICATES_TOTAL) == {}
    assert total(feed, OFFERS_TOTAL) == {EMAIL: 1}


# -- late events -------------------------------------------------------------------------


def test_late_offer_counts_in_totals_and_open_windows_once() -> None:
    feed = new_feed()
    feed.send(offer("o1", "bob", T0 + 20 * MINUTE, offer_id="B"))
    # [T0, T0+5m) closed at stream time T0+20m (> end + 60 s); [T0, T0+1h) is open.
    feed.send(offer("o2", "alice", T0 + MINUTE, offer_id="A"))
    assert total(feed, LATE_TOTAL) == {(OFFERS_TOPIC,): 1}
    assert total(feed, OFFERS_TOTAL) == {EMAIL: 2}
    assert vector(feed, "5m", T0, EMAIL) == []
    assert vector(feed, "5m", T0 + 20 * MINUTE, EMAIL) == [1, 0, 0, 1, 0]
    assert vector(feed, "1h", T0, EMAIL) == [2, 0, 0, 2, 0]
    # Its conversion counts where the offer counted.
    feed.send(purchase("p1", "alice", T0 + 21 * MINUTE, offer_id="A", amount_micros=3))
    assert vector(feed, "5m", T0, EMAIL) == []
    assert vector(feed, "5m", T0 + 20 * MINUTE, EMAIL) == [1, 0, 0, 1, 0]
    assert vector(feed, "1h", T0, EMAIL) == [2, 1, 3, 2, 1]
    assert total(feed, CONVERSIONS_TOTAL) == {EMAIL: 1}
    assert total(feed, LATE_TOTAL) == {(OFFERS_TOPIC,): 1}


def test_offer_late_in_every_size_counts_once_and_only_in_totals() -> None:
    feed = new_feed()
    feed.send(offer("o1", "bob", T0 + 3 * HOUR, offer_id="B"))
    feed.send(offer("o2", "alice", T0, offer_id="A"))
    totals, windows = snapshot(feed.partition)
    assert totals[LATE_TOTAL] == {(OFFERS_TOPIC,): 1}
    assert totals[OFFERS_TOTAL] == {EMAIL: 2}
    assert {slot[1:] for slot in windows} == {("5m", T0 + 3 * HOUR), ("1h", T0 + 3 * HOUR)}
    feed.send(purchase("p1", "alice", T0 + MINUTE, offer_id="A", amount_micros=1))
    assert total(feed, CONVERSIONS_TOTAL) == {EMAIL: 1}
    assert total(feed, LATE_TOTAL) == {(OFFERS_TOPIC,): 1, (PURCHASES_TOPIC,): 1}
    assert total(feed, PURCHASES_TOTAL) == {("upsell", "unknown", NONE): 1}
    assert snapshot(feed.partition)[1] == windows


def test_window_boundary_of_lateness() -> None:
    feed = new_feed()
    end = T0 + 5 * MINUTE
    feed.tick(end + CONFIG.grace_ms)  # not yet passed: [T0, T0+5m) still open
    feed.send(offer("o1", "alice", end - 1, offer_id="A"))
    feed.tick(end + CONFIG.grace_ms + 1)  # passed: closed
    feed.send(offer("o2", "alice", end - 1, offer_id="B"))
    assert total(feed, LATE_TOTAL) == {(OFFERS_TOPIC,): 1}
    assert vector(feed, "5m", T0, EMAIL) == [1, 0, 0, 1, 0]
    assert vector(feed, "1h", T0, EMAIL) == [2, 0, 0, 1, 0]


def test_stamp_moves_stream_time_before_the_event() -> None:
    feed = new_feed()
    feed.send(offer("o1", "alice", T0, offer_id="A"), stamp=T0 + 10 * MINUTE)
    assert total(feed, LATE_TOTAL) == {(OFFERS_TOPIC,): 1}
    assert feed.partition.stream_time == T0 + 10 * MINUTE


def test_ticks_move_stream_time_only_forward_and_count_nothing() -> None:
    feed = new_feed()
    feed.tick(T0)
    feed.tick(T0 - HOUR)
    assert feed.partition.stream_time == T0
    assert snapshot(feed.partition) == snapshot(CustomerPartition(CONFIG))


# -- replays and rejects -----------------------------------------------------------------


def test_replayed_item_with_same_source_coordinates_is_ignored() -> None:
    feed = new_feed()
    item = feed.send(offer("o1", "alice", T0, offer_id="A"))
    reject = feed.reject(PURCHASES_TOPIC, "not_json")
    before = snapshot(feed.partition)
    feed.deliver(item)  # a new log offset, the same source coordinates
    feed.deliver(reject)
    older = Forwarded(OFFERS_TOPIC, 0, 0, None, offer("o9", "zed", T0, offer_id="Z"))
    feed.deliver(older)  # at the source watermark
    assert snapshot(feed.partition) == before
    # Other source partitions have their own watermark.
    feed.deliver(Forwarded(OFFERS_TOPIC, 1, 0, None, offer("o9", "zed", T0, offer_id="Z")))
    assert total(feed, OFFERS_TOTAL) == {EMAIL: 2}


def test_item_below_next_offset_is_ignored() -> None:
    feed = new_feed()
    feed.send(offer("o1", "alice", T0, offer_id="A"))
    assert feed.partition.next_offset == 1
    fresh = Forwarded(OFFERS_TOPIC, 0, 99, None, offer("o2", "alice", T0, offer_id="B"))
    feed.deliver(fresh, offset=0)
    assert total(feed, OFFERS_TOTAL) == {EMAIL: 1}
    feed.deliver(fresh, offset=5)
    assert total(feed, OFFERS_TOTAL) == {EMAIL: 2}
    assert feed.partition.next_offset == 6


def test_rejects_counted_by_topic_and_reason() -> None:
    feed = new_feed()
    for topic, reason in [
        (OFFERS_TOPIC, "not_json"),
        (OFFERS_TOPIC, "not_json"),
        (OFFERS_TOPIC, "missing_field"),
        (PURCHASES_TOPIC, "negative_amount"),
        (PURCHASES_TOPIC, "bad_ts"),
        (PURCHASES_TOPIC, "bad_ts"),
    ]:
        feed.reject(topic, reason)
    assert total(feed, REJECTED_TOTAL) == {
        (OFFERS_TOPIC, "not_json"): 2,
        (OFFERS_TOPIC, "missing_field"): 1,
        (PURCHASES_TOPIC, "negative_amount"): 1,
        (PURCHASES_TOPIC, "bad_ts"): 2,
    }
    assert feed.partition.stream_time is None
    assert snapshot(feed.partition)[1] == {}


# -- the KPI views -----------------------------------------------------------------------


def test_campaign_view_counts_offers_by_campaign_type_and_product_line() -> None:
    feed = new_feed()
    feed.send(
        offer("o1", "alice", T0, offer_id="A", campaign_type="limited_time", product_line="tv")
    )
    feed.send(offer("o2", "bob", T0 + SECOND, offer_id="B"))
    feed.send(purchase("p1", "alice", T0 + MINUTE, offer_id="A", amount_micros=4))
    assert total(feed, CAMPAIGN_OFFERS_TOTAL) == {("limited_time", "tv"): 1, (NONE, NONE): 1}
    assert vector(feed, "5m", T0, ("limited_time", "tv"), CAMPAIGN) == [1, 1, 4, 1, 1]
    assert vector(feed, "5m", T0, (NONE, NONE), CAMPAIGN) == [1, 0, 0, 1, 0]
    assert vector(feed, "5m", T0, (ALL, "tv"), CAMPAIGN) == [1, 1, 4, 1, 1]
    assert vector(feed, "5m", T0, (ALL, ALL), CAMPAIGN) == [2, 1, 4, 2, 1]


def test_purchases_view_kinds_and_buyers() -> None:
    feed = new_feed()
    feed.send(offer("o1", "alice", T0, offer_id="A"))
    feed.send(
        purchase(
            "p1",
            "alice",
            T0 + MINUTE,
            offer_id="A",
            is_upsell=False,
            amount_micros=10,
            product_line="tv",
            loyalty_member=True,
        )
    )
    feed.send(
        purchase(
            "p2", "alice", T0 + MINUTE, amount_micros=3, product_line="tv", loyalty_member=True
        )
    )
    feed.send(purchase("p3", "bob", T0 + 2 * MINUTE, is_upsell=True, amount_micros=5))
    feed.send(purchase("p4", "carol", T0 + 6 * MINUTE, amount_micros=1, loyalty_member=False))
    assert total(feed, PURCHASES_TOTAL) == {
        ("upsell", "member", "tv"): 1,  # converted an offer
        ("other", "member", "tv"): 1,
        ("upsell", "unknown", NONE): 1,  # is_upsell, no offer left to convert
        ("other", "non_member", NONE): 1,
    }
    assert total(feed, PURCHASE_AMOUNT_TOTAL) == {
        ("upsell", "member", "tv"): 10,
        ("other", "member", "tv"): 3,
        ("upsell", "unknown", NONE): 5,
        ("other", "non_member", NONE): 1,
    }
    # upsell, other, upsell amount, other amount, buyers, upsell buyers - by purchase ts.
    five = ("5m", T0)
    assert vector(feed, *five, ("member", "tv"), PURCHASES_VIEW) == [1, 1, 10, 3, 1, 1]
    assert vector(feed, *five, ("unknown", NONE), PURCHASES_VIEW) == [1, 0, 5, 0, 1, 1]
    assert vector(feed, *five, (ALL, ALL), PURCHASES_VIEW) == [2, 1, 15, 3, 2, 2]
    assert vector(feed, "5m", T0 + 5 * MINUTE, (ALL, ALL), PURCHASES_VIEW) == [0, 1, 0, 1, 1, 0]
    assert vector(feed, "1h", T0, (ALL, ALL), PURCHASES_VIEW) == [2, 2, 15, 4, 3, 2]


def test_explicit_non_upsell_purchase_waits_for_its_offer_to_know_its_kind() -> None:
    feed = new_feed()
    feed.send(purchase("p1", "alice", T0 + MINUTE, offer_id="A", is_upsell=False, amount_micros=2))
    assert total(feed, PURCHASES_TOTAL) == {}
    feed.send(offer("o1", "alice", T0, offer_id="A"))
    assert total(feed, PURCHASES_TOTAL) == {("upsell", "unknown", NONE): 1}
    assert vector(feed, "5m", T0, (ALL, ALL), PURCHASES_VIEW) == [1, 0, 2, 0, 1, 1]


def test_explicit_non_upsell_purchase_whose_offer_never_comes_is_other() -> None:
    config = WindowConfig(sizes=SIZES, attribution_ms=10 * MINUTE, grace_ms=MINUTE)
    feed = Feed(CustomerPartition(config))
    feed.send(purchase("p1", "alice", T0 + MINUTE, offer_id="A", is_upsell=False, amount_micros=2))
    feed.tick(T0 + 13 * MINUTE)  # past ts + attribution + grace
    feed.partition.take_changes()
    assert total(feed, PURCHASES_TOTAL) == {("other", "unknown", NONE): 1}
    assert vector(feed, "1h", T0, (ALL, ALL), PURCHASES_VIEW) == [0, 1, 0, 2, 1, 0]


def test_kind_of_purchase_naming_another_customers_offer_does_not_depend_on_arrival() -> None:
    # Only the customer's own events decide: bob's offer A is not alice's, so alice's
    # purchase waits for an offer A of hers, in either order (as it would if alice and bob
    # were in different partitions).
    results = []
    events: list[Event] = [
        offer("o1", "bob", T0, offer_id="A"),
        purchase("p1", "alice", T0 + MINUTE, offer_id="A", is_upsell=False, amount_micros=2),
    ]
    for arrival in (events, events[::-1]):
        feed = new_feed()
        feed.send_all(arrival)
        feed.tick(T0 + 3 * MINUTE)
        results.append(total(feed, PURCHASES_TOTAL))
    assert results[0] == results[1] == {}


def test_given_up_purchase_is_counted_whatever_the_batches() -> None:
    config = WindowConfig(sizes=SIZES, attribution_ms=10 * MINUTE, grace_ms=MINUTE)
    reported = []
    # Batches as the pipeline runs them: apply, take_partials, take_changes.
    for batches in (
        [[T0 + 13 * MINUTE], [T0 + 17 * MINUTE], []],
        [[T0 + 13 * MINUTE, T0 + 17 * MINUTE], []],
    ):
        feed = Feed(CustomerPartition(config))
        feed.send(purchase("p1", "alice", T0 + MINUTE, offer_id="A", is_upsell=False))
        seen: dict[Any, list[int]] = {}
        # It gives up at T0+13m; [T0, T0+5m) is final after T0+16m.
        for ticks in batches:
            for stamp in ticks:
                feed.tick(stamp)
            for p in feed.partition.take_partials():
                seen[(p.view, p.label, p.start, p.key)] = p.vector
            feed.partition.take_changes()
        reported.append(seen.get(("purchases", "5m", T0, (ALL, ALL))))
    assert reported[0] == reported[1]


# -- persistence --------------------------------------------------------------------------


def test_restore_from_nothing_is_a_fresh_partition() -> None:
    restored = CustomerPartition.restore(CONFIG, {})
    assert restored.stream_time is None
    assert restored.next_offset == 0
    assert snapshot(restored) == snapshot(CustomerPartition(CONFIG))


def test_take_changes_deletes_final_windows_and_expired_state() -> None:
    config = WindowConfig(sizes=SIZES, attribution_ms=10 * MINUTE, grace_ms=MINUTE)
    feed = Feed(CustomerPartition(config))
    feed.send(offer("o1", "alice", T0, offer_id="A"))
    feed.send(purchase("p1", "alice", T0 + MINUTE, offer_id="nope"))
    feed.send(purchase("p2", "alice", T0 + MINUTE, offer_id="nope", is_upsell=False))
    store: dict[str, Any] = {}
    merge_store(store, feed.partition.take_changes())
    assert any(key.startswith("w|") for key in store)
    feed.tick(T0 + 2 * HOUR)
    merge_store(store, feed.partition.take_changes())
    # Everything has expired: only the metadata remains, with the totals in it (and the
    # label values admitted, which are kept for good).
    assert {key for key in store if not key.startswith("l|")} == {"m"}
    assert feed.partition.open_offers() == 0
    restored = CustomerPartition.restore(config, store)
    assert snapshot(restored) == snapshot(feed.partition)
    assert snapshot(restored)[1] == {}
    assert total(feed, OFFERS_TOTAL) == {EMAIL: 1}
    assert total(feed, PURCHASES_TOTAL) == {
        ("upsell", "unknown", NONE): 1,
        ("other", "unknown", NONE): 1,
    }


def test_reused_offer_id_after_expiry_does_not_depend_on_batches() -> None:
    # The first offer expires by stream time, not when take_changes happens to run.
    config = WindowConfig(sizes=SIZES, attribution_ms=10 * MINUTE, grace_ms=MINUTE)
    results = []
    for cut in (False, True):
        feed = Feed(CustomerPartition(config))
        feed.send(offer("o1", "alice", T0, offer_id="X"))
        feed.tick(T0 + HOUR)
        if cut:
            feed.partition.take_changes()
        feed.send(offer("o2", "alice", T0 + HOUR, offer_id="X"))
        feed.send(purchase("p1", "alice", T0 + HOUR + MINUTE, offer_id="X"))
        results.append(total(feed, CONVERSIONS_TOTAL))
    assert results[0] == results[1]


def test_overdue_last_touch_does_not_depend_on_batches() -> None:
    config = WindowConfig(sizes=SIZES, attribution_ms=30 * MINUTE, grace_ms=MINUTE)
    results = []
    for cut in (False, True):
        feed = Feed(CustomerPartition(config))
        feed.send(offer("o1", "bob", T0 + 35 * MINUTE, offer_id="B"))
        feed.send(offer("o2", "alice", T0, offer_id="A"))  # late
        feed.send(purchase("p1", "alice", T0 + MINUTE, is_upsell=True))  # late, due at once
        if cut:
            feed.partition.take_changes()
        feed.send(offer("o3", "bob", T0 + 40 * MINUTE, offer_id="C"))
        results.append(total(feed, CONVERSIONS_TOTAL))
    assert results[0] == results[1]


def test_forget_expired_drops_every_waiting_purchase() -> None:
    config = WindowConfig(sizes=SIZES, attribution_ms=10 * MINUTE, grace_ms=MINUTE)
    feed = Feed(CustomerPartition(config))
    keys = []
    for i in range(3):
        keys.append(f"p|{feed.offset}|p{i}")  # a waiting purchase is known by its arrival
        feed.send(purchase(f"p{i}", "alice", T0 + i * SECOND, offer_id="never-presented"))
    assert feed.partition.open_offers() == 3
    written = feed.partition.take_changes()
    assert all(written[key] is not None for key in keys)
    feed.tick(T0 + HOUR)
    changes = feed.partition.take_changes()
    assert [changes.get(key, "kept") for key in keys] == [None, None, None]
    assert feed.partition.open_offers() == 0


# -- properties ---------------------------------------------------------------------------

CUSTOMERS = ["alice", "bob", "carol"]


@dataclass
class Scenario:
    events: list[Event]
    duplicates: list[Event] = field(default_factory=list)

    @property
    def offers(self) -> list[Offer]:
        return [e for e in self.events if isinstance(e, Offer)]

    @property
    def purchases(self) -> list[Purchase]:
        return [e for e in self.events if isinstance(e, Purchase)]


@st.composite
def scenarios(
    draw: st.DrawFn,
    *,
    slots: int,
    slot_ms: int,
    max_offers: int = 6,
    max_purchases: int = 6,
    unique_named: bool = True,
    max_duplicates: int = 2,
    foreign_named_upsell: bool = False,
) -> Scenario:
    """Offers and purchases of 1-3 customers with ts T0 + k * slot_ms, 0 <= k <= slots.

    Offer ids are unique per presentation. Purchases name an existing offer (often of the
    same customer), a missing one, or none (last touch when is_upsell). With unique_named,
    no two purchases name the same offer. With foreign_named_upsell, a purchase naming
    another customer's offer is an upsell by itself (see
    test_purchase_naming_another_customers_offer_counts_the_same_in_any_partitioning).
    """
    customers = CUSTOMERS[: draw(st.integers(1, 3))]
    moments = st.integers(0, slots).map(lambda k: T0 + k * slot_ms)
    offers = [
        Offer(
            event_id=f"eo{i}",
            offer_id=f"X{i}",
            customer_id=draw(st.sampled_from(customers)),
            channel=draw(st.sampled_from(["email", "sms", "push"])),
            segment=draw(st.sampled_from(["smb", "enterprise"])),
            ts=draw(moments),
            campaign_type=draw(st.sampled_from([None, "limited_time", "loyalty_upgrade"])),
            product_line=draw(st.sampled_from([None, "tv"])),
        )
        for i in range(draw(st.integers(1, max_offers)))
    ]
    by_id = {o.offer_id: o for o in offers}
    named: set[str] = set()
    purchases = []
    for i in range(draw(st.integers(1, max_purchases))):
        offer_id = draw(st.none() | st.sampled_from([*by_id, "ghost"]))
        if unique_named and offer_id in named:
            offer_id = None
        close = draw(st.booleans())
        if offers and close:  # shortly after an offer: conversions happen
            near_offer: Offer = (
                by_id[offer_id] if offer_id in by_id else draw(st.sampled_from(offers))
            )
            near = near_offer.ts
            ts = near + draw(st.integers(-1, 6)) * slot_ms
        else:
            ts = draw(moments)
        is_upsell = draw(st.booleans())
        if offer_id in by_id:
            named.add(offer_id)
            named_offer = by_id[offer_id]
            customer = draw(st.sampled_from([named_offer.customer_id] * 3 + customers))
            if foreign_named_upsell and customer != named_offer.customer_id:
                is_upsell = True
        else:
            customer = draw(st.sampled_from(customers))
        purchases.append(
            Purchase(
                event_id=f"ep{i}",
                order_id=f"order{i}",
                customer_id=customer,
                ts=ts,
                amount_micros=draw(st.integers(0, 10**9)),
                offer_id=offer_id,
                is_upsell=is_upsell,
                product_line=draw(st.sampled_from([None, "tv", "mobile"])),
                loyalty_member=draw(st.sampled_from([None, True, False])),
            )
        )
    events: list[Event] = [*offers, *purchases]
    duplicates = draw(st.lists(st.sampled_from(events), max_size=max_duplicates)) if events else []
    return Scenario(events, duplicates)


# Everything within 10 minutes, grace 1 hour: every event is on time whatever the order.
ON_TIME = WindowConfig(sizes=SIZES, attribution_ms=7 * DAY, grace_ms=HOUR)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), scenario=scenarios(slots=20, slot_ms=30 * SECOND))
def test_arrival_order_never_changes_the_result(data: st.DataObject, scenario: Scenario) -> None:
    everything = scenario.events + scenario.duplicates
    last_ts = max((e.ts for e in everything), default=T0)
    expected = reference(scenario.offers, scenario.purchases, scenario.duplicates, ON_TIME)
    for _ in range(2):
        feed = Feed(CustomerPartition(ON_TIME))
        feed.send_all(data.draw(st.permutations(everything)))
        feed.tick(last_ts + ON_TIME.grace_ms + 1)  # decides every last-touch purchase
        assert snapshot(feed.partition) == expected


# A short grace and attribution over up to 3 hours: late events, closed and final windows,
# expiry of remembered ids, offers and purchases.
SHORT = WindowConfig(sizes=SIZES, attribution_ms=30 * MINUTE, grace_ms=MINUTE)
TIGHT = WindowConfig(sizes=SIZES, attribution_ms=5 * MINUTE, grace_ms=MINUTE)


@st.composite
def operations(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """A log: events in any order, with ticks and rejects among them."""
    slot_ms = draw(st.sampled_from([MINUTE, 5 * MINUTE]))
    scenario = draw(
        scenarios(
            slots=36,
            slot_ms=slot_ms,
            max_offers=10,
            max_purchases=10,
            unique_named=False,
            max_duplicates=4,
        )
    )
    events = scenario.events + scenario.duplicates
    if draw(st.booleans()):
        arrival = draw(st.permutations(events))
    else:  # roughly in ts order, each event up to a few slots late
        delays = draw(st.lists(st.integers(0, 8), min_size=len(events), max_size=len(events)))
        order = sorted(range(len(events)), key=lambda i: (events[i].ts + delays[i] * slot_ms, i))
        arrival = [events[i] for i in order]
    ops: list[tuple[Any, ...]] = [("event", e) for e in arrival]
    extras = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("tick"), st.integers(0, 40).map(lambda k: T0 + k * slot_ms)),
                st.tuples(
                    st.just("reject"),
                    st.sampled_from([OFFERS_TOPIC, PURCHASES_TOPIC]),
                    st.sampled_from(["not_json", "bad_ts"]),
                ),
            ),
            max_size=5,
        )
    )
    for extra in extras:
        ops.insert(draw(st.integers(0, len(ops))), extra)
    return ops


def play(feed: Feed, op: tuple[Any, ...]) -> None:
    if op[0] == "event":
        feed.send(op[1])
    elif op[0] == "tick":
        feed.tick(op[1])
    else:
        feed.reject(op[1], op[2])


def check_bounds(totals: TotalsRows, windows: WindowRows) -> None:
    for pair, n in totals[CONVERSIONS_TOTAL].items():
        assert 0 <= n <= totals[OFFERS_TOTAL][pair]
    for (view_name, _, _), cells in windows.items():
        view = VIEW_BY_NAME[view_name]
        for key, vec in cells.items():
            named = dict(zip(view.fields, vec, strict=True))
            assert all(n >= 0 for n in vec), (view_name, key, vec)
            if view in OFFER_VIEWS:
                assert named["conversions"] <= named["offers"], (key, vec)
                assert 0 <= named["conversions"] / max(named["offers"], 1) <= 1
                assert named["customers_targeted"] <= named["offers"]
                assert named["customers_upsold"] <= named["customers_targeted"]
                assert named["customers_upsold"] <= named["conversions"]
            else:
                purchases = named["upsell_purchases"] + named["other_purchases"]
                assert named["buyers_any"] <= purchases
                assert named["buyers_upsell"] <= named["buyers_any"]
                assert named["buyers_upsell"] <= named["upsell_purchases"]
        # Roll-ups: sums add up, distinct counts lie between the largest part and the sum.
        for rolled, vec in cells.items():
            if ALL not in rolled:
                continue
            parts = [
                v
                for key, v in cells.items()
                if ALL not in key and all(r in (ALL, k) for r, k in zip(rolled, key, strict=True))
            ]
            for index in range(len(view.sums)):
                assert vec[index] == sum(p[index] for p in parts), (rolled, vec, parts)
            for index in range(len(view.sums), len(vec)):
                assert max((p[index] for p in parts), default=0) <= vec[index]
                assert vec[index] <= sum(p[index] for p in parts)


@settings(max_examples=100, deadline=None)
@given(ops=operations(), config=st.sampled_from([SHORT, TIGHT, CONFIG, ON_TIME]))
def test_window_conversions_never_exceed_offers(
    ops: list[tuple[Any, ...]], config: WindowConfig
) -> None:
    feed = Feed(CustomerPartition(config))
    for op in ops:
        play(feed, op)
        check_bounds(*snapshot(feed.partition))
    feed.tick(T0 + 4 * HOUR)
    check_bounds(*snapshot(feed.partition))
    totals = totals_rows(feed.partition.totals)
    events = [op[1] for op in ops if op[0] == "event"]
    offers = [e for e in events if isinstance(e, Offer)]
    # Every offer event counts either as presented or as a duplicate, in both views.
    duplicates = totals[DUPLICATES_TOTAL]
    assert sum(totals[OFFERS_TOTAL].values()) + duplicates.get((OFFERS_TOPIC,), 0) == len(offers)
    assert sum(totals[CAMPAIGN_OFFERS_TOTAL].values()) == sum(totals[OFFERS_TOTAL].values())
    repeats = len(events) - len({e.event_id for e in events})
    assert sum(duplicates.values()) <= repeats
    if config.attribution_ms > 4 * HOUR:  # nothing forgotten: every repeat is a duplicate
        assert sum(duplicates.values()) == repeats
    assert sum(totals[REJECTED_TOTAL].values()) == sum(op[0] == "reject" for op in ops)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), ops=operations(), config=st.sampled_from([SHORT, TIGHT, CONFIG]))
def test_restore_round_trip_and_replay_safety(
    data: st.DataObject, ops: list[tuple[Any, ...]], config: WindowConfig
) -> None:
    split = data.draw(st.integers(0, len(ops)), label="split")
    cuts = {
        i
        for i, cut in enumerate(
            data.draw(st.lists(st.booleans(), min_size=split, max_size=split), label="cuts")
        )
        if cut
    }
    original = Feed(CustomerPartition(config))
    store: dict[str, Any] = {}
    for i, op in enumerate(ops[:split]):
        if i in cuts:
            merge_store(store, original.partition.take_changes())
        play(original, op)
    merge_store(store, original.partition.take_changes())
    prefix_log = list(original.log)

    restored = Feed(CustomerPartition.restore(config, copy.deepcopy(store)))
    restored.offset = original.offset
    assert snapshot(restored.partition) == snapshot(original.partition)
    assert restored.partition.stream_time == original.partition.stream_time
    assert restored.partition.next_offset == original.partition.next_offset
    assert restored.partition.open_offers() == original.partition.open_offers()

    # The rest, to both, at the same log offsets.
    for op in ops[split:]:
        play(original, op)
    for item, offset in original.log[len(prefix_log) :]:
        restored.deliver(item, offset)
    final = snapshot(original.partition)
    assert snapshot(restored.partition) == final
    assert restored.partition.stream_time == original.partition.stream_time
    assert restored.partition.open_offers() == original.partition.open_offers()
    # The stores they would write end up the same, and restore to the same state.
    store_a, store_b = copy.deepcopy(store), copy.deepcopy(store)
    merge_store(store_a, original.partition.take_changes())
    merge_store(store_b, restored.partition.take_changes())
    assert canonical_store(store_a) == canonical_store(store_b)
    assert snapshot(CustomerPartition.restore(config, store_a)) == snapshot(original.partition)

    # Replay safety: the prefix again, at its old offsets and then at new ones.
    again = Feed(CustomerPartition.restore(config, copy.deepcopy(store)))
    at_restore = snapshot(again.partition)
    for item, offset in prefix_log:
        again.deliver(item, offset)
    assert snapshot(again.partition) == at_restore
    again.offset = max(again.offset, again.partition.next_offset)
    for item, _ in prefix_log:
        again.deliver(item)
    assert snapshot(again.partition) == at_restore
    for item, _ in original.log[len(prefix_log) :]:
        again.deliver(item)
    assert snapshot(again.partition) == final


@settings(max_examples=100, deadline=None)
@given(
    data=st.data(),
    ops=operations(),
    config=st.sampled_from([SHORT, TIGHT, CONFIG]),
)
def test_batch_boundaries_do_not_matter(
    data: st.DataObject, ops: list[tuple[Any, ...]], config: WindowConfig
) -> None:
    cuts = data.draw(
        st.lists(
            st.sampled_from(["none", "partials", "both"]), min_size=len(ops), max_size=len(ops)
        ),
        label="cuts",
    )

    def run(cut_at: list[str]) -> tuple[Feed, dict[Any, list[int]], dict[str, Any]]:
        feed = Feed(CustomerPartition(config))
        reported: dict[Any, list[int]] = {}
        store: dict[str, Any] = {}

        def cut(kind: str) -> None:
            for p in feed.partition.take_partials():
                reported[(p.view, p.label, p.start, p.key)] = p.vector
            if kind == "both":
                merge_store(store, feed.partition.take_changes())

        for kind, op in zip(cut_at, ops, strict=True):
            if kind != "none":
                cut(kind)
            play(feed, op)
        cut("both")
        return feed, reported, store

    whole, reported_whole, store_whole = run(["none"] * len(ops))
    batched, reported_batched, store_batched = run(cuts)
    assert snapshot(batched.partition) == snapshot(whole.partition)
    assert batched.partition.stream_time == whole.partition.stream_time
    # The last vector reported for every key is the same: the board ends up the same.
    assert reported_batched == reported_whole
    # The stores hold the same and restore to the same results.
    assert canonical_store(store_batched) == canonical_store(store_whole)
    restored = CustomerPartition.restore(config, store_batched)
    assert snapshot(restored) == snapshot(whole.partition)
    assert restored.stream_time == whole.partition.stream_time
