"""Decisions are taken as of the stream time at which they fall due, whatever later stream
time the worker learns it at; duplicates never move stream time.

Three checks: a partition against the arrival-order reference model (late events,
closed and final windows, ticks, far jumps, duplicates); partitions and the rates board
with one jump against the same events with stream time moving through every value; and
the worker's three stages in process, for the scenario of issue 18 and for a duplicate
stamped hours ahead.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.domain.board import RatesBoard
from stream_app.domain.events import Event, Offer, Purchase
from stream_app.domain.forwarding import Forwarded, encode_forwarded
from stream_app.domain.partition import CustomerPartition
from stream_app.domain.totals import LATE_TOTAL, TOTALS
from stream_app.domain.views import VIEW_BY_NAME
from stream_app.domain.window_config import WindowConfig
from stream_app.settings import Settings, WindowSize
from tests.unit.conftest import (
    HOUR,
    MINUTE,
    PURCHASES_TOPIC,
    T0,
    Feed,
    purchase,
    totals_rows,
)
from tests.unit.in_process import InProcessWorker
from tests.unit.replay_reference import Arrival, Cell, ReplayReference
from tests.unit.test_core_board import Wire

SIZES = (("10m", 10 * MINUTE), ("1h", HOUR))
CUSTOMERS = ("alice", "bob", "carol")


@st.composite
def events(draw: st.DrawFn, *, span_minutes: int) -> list[Event]:
    """Offers and purchases on a one-minute grid, purchases mostly soon after an offer."""
    customers = CUSTOMERS[: draw(st.integers(1, 3))]
    minute = st.integers(0, span_minutes).map(lambda k: T0 + k * MINUTE)
    offers = [
        Offer(
            event_id=f"eo{i}",
            offer_id=f"X{i}",
            customer_id=draw(st.sampled_from(customers)),
            channel=draw(st.sampled_from(["email", "sms"])),
            segment=draw(st.sampled_from(["smb", "enterprise"])),
            ts=draw(minute),
            campaign_type=draw(st.sampled_from([None, "limited_time"])),
            product_line=draw(st.sampled_from([None, "tv"])),
        )
        for i in range(draw(st.integers(1, 6)))
    ]
    purchases = []
    for i in range(draw(st.integers(1, 6))):
        near = draw(st.sampled_from(offers))
        offer_id = draw(st.sampled_from([None, None, near.offer_id, "ghost"]))
        customer = near.customer_id if draw(st.booleans()) else draw(st.sampled_from(customers))
        ts = near.ts + draw(st.integers(-2, 40)) * MINUTE if draw(st.booleans()) else draw(minute)
        purchases.append(
            Purchase(
                event_id=f"ep{i}",
                order_id=f"order{i}",
                customer_id=customer,
                ts=ts,
                amount_micros=draw(st.integers(0, 10**8)),
                offer_id=offer_id,
                is_upsell=draw(st.booleans())
                if offer_id is not None
                else draw(st.sampled_from([True, True, False])),
                product_line=draw(st.sampled_from([None, "tv"])),
                loyalty_member=draw(st.sampled_from([None, True, False])),
            )
        )
    return [*offers, *purchases]


configs = st.builds(
    lambda grace, attribution: WindowConfig(
        SIZES, attribution_ms=attribution * MINUTE, grace_ms=grace * MINUTE
    ),
    st.sampled_from([1, 5, 30]),
    st.sampled_from([15, 45, 120]),
)


def last_vectors(feed: Feed, seen: dict[Cell, dict[str, int]]) -> None:
    """Keep the latest figures of every cell the partition reports as changed."""
    for partial in feed.partition.take_partials():
        view = VIEW_BY_NAME[partial.view]
        seen[((partial.view, partial.label, partial.start), partial.key)] = dict(
            zip(view.fields, partial.vector, strict=True)
        )


def plain_totals(totals: dict[str, Counter[tuple[str, ...]]]) -> dict[str, dict[Any, int]]:
    return {name: {k: n for k, n in totals.get(name, Counter()).items() if n} for name in TOTALS}


@settings(max_examples=150, deadline=None)
@given(data=st.data(), config=configs, scenario=events(span_minutes=240))
def test_a_partition_counts_what_the_arrival_order_reference_counts(
    data: st.DataObject, config: WindowConfig, scenario: list[Event]
) -> None:
    """Any arrival order, with ticks, far jumps and duplicates (some stamped later)."""
    last = max(e.ts for e in scenario)
    ticks = data.draw(
        st.lists(
            st.integers(0, (last - T0) // MINUTE + 48 * 60).map(lambda k: T0 + k * MINUTE + 1),
            max_size=4,
        )
    )
    duplicates = [
        dataclasses.replace(e, ts=e.ts + data.draw(st.sampled_from([0, 0, 90 * MINUTE])))
        for e in data.draw(st.lists(st.sampled_from(scenario), max_size=2))
    ]
    arrivals: list[Arrival] = data.draw(st.permutations([*scenario, *ticks, *duplicates]))
    feed = Feed(CustomerPartition(config))
    seen: dict[Cell, dict[str, int]] = {}
    for arrival in arrivals:
        if isinstance(arrival, int):
            feed.tick(arrival)
        else:
            feed.send(arrival)
        last_vectors(feed, seen)
        if data.draw(st.booleans()):
            feed.partition.take_changes()  # a batch ends: expired state is forgotten
    expected = ReplayReference(config.sizes, config.attribution_ms, config.grace_ms).replay(
        arrivals
    )
    assert totals_rows(feed.partition.totals) == plain_totals(expected.totals)
    assert seen == expected.cells


def _resent_copy_arrivals(copy_shift: int) -> list[Arrival]:
    """A non-upsell purchase naming an offer never presented (it waits until stream time
    passes ts + attribution + grace, then counts as `other`), and the same event_id again,
    stamped `copy_shift` away, once the first's event_id is no longer remembered (stream
    time past ts + attribution) but while the first still waits."""
    first = purchase("p1", "alice", T0 + 125 * MINUTE, offer_id="ghost", is_upsell=False)
    return [
        first,
        T0 + 171 * MINUTE,  # past 125 + 45 (forgotten), not past 125 + 45 + 1 (waiting)
        dataclasses.replace(first, ts=first.ts + copy_shift),
        T0 + 172 * MINUTE,  # the first gives up too
    ]


@pytest.mark.parametrize("restart", [False, True], ids=["", "restarted"])
@pytest.mark.parametrize("copy_shift", [0, -90 * MINUTE], ids=["same_ts", "stamped_earlier"])
def test_a_copy_accepted_after_its_event_id_is_forgotten_never_replaces_the_waiting_first(
    copy_shift: int, restart: bool
) -> None:
    """Hypothesis' counterexample, reduced: the contract remembers an event_id only "for
    the attribution window in event time", so the copy is a new event and both count."""
    config = WindowConfig(SIZES, attribution_ms=45 * MINUTE, grace_ms=MINUTE)
    arrivals = _resent_copy_arrivals(copy_shift)
    feed = Feed(CustomerPartition(config))
    for arrival in arrivals:
        if isinstance(arrival, int):
            feed.tick(arrival)
        else:
            feed.send(arrival)
        if restart:
            state = dict(feed.partition.packed_snapshot())
            feed.partition = CustomerPartition.restore(config, state)
    totals = totals_rows(feed.partition.totals)
    assert totals["purchases"] == {("other", "unknown", "__none__"): 2}
    assert totals["duplicates"] == {}
    expected = ReplayReference(config.sizes, config.attribution_ms, config.grace_ms)
    assert totals == plain_totals(expected.replay(arrivals).totals)


@pytest.mark.parametrize("first_handed", [False, True], ids=["topic_then_handed", "both_handed"])
def test_copies_handed_over_in_process_wait_apart_too(first_handed: bool) -> None:
    """The same two copies when the validating stage hands them over in process (fewer
    hops: no internal-topic offset to tell them apart), after a copy read from the topic
    or after another handed one."""
    config = WindowConfig(SIZES, attribution_ms=45 * MINUTE, grace_ms=MINUTE)
    arrivals = _resent_copy_arrivals(0)
    feed = Feed(CustomerPartition(config))
    copies = 0
    for arrival in arrivals:
        if isinstance(arrival, int):
            feed.tick(arrival)
            continue
        copies += 1
        if copies == 1 and not first_handed:
            feed.send(arrival)
            continue
        item = Forwarded(PURCHASES_TOPIC, 0, copies - 1, None, arrival)
        feed.partition.apply_handed([encode_forwarded(item)])
    totals = totals_rows(feed.partition.totals)
    assert totals["purchases"] == {("other", "unknown", "__none__"): 2}
    assert totals["duplicates"] == {}


def test_a_waiting_purchase_stored_by_event_id_alone_restores_and_is_decided() -> None:
    """A state written before waiting purchases were keyed by arrival: p|<event_id> and
    k|<event_id>. It restores, gives up in time, and its entries are deleted."""
    config = WindowConfig(SIZES, attribution_ms=45 * MINUTE, grace_ms=MINUTE)
    feed = Feed(CustomerPartition(config))
    feed.send(purchase("p1", "alice", T0, offer_id="ghost", is_upsell=False))
    state = dict(feed.partition.packed_snapshot())
    older = {key.replace(f"|{feed.log[0][1]}|p1", "|p1"): v for key, v in state.items()}
    assert {"p|p1", "k|p1"} <= older.keys()
    feed.partition = CustomerPartition.restore(config, older)
    feed.tick(T0 + 46 * MINUTE)
    assert totals_rows(feed.partition.totals)["purchases"] == {}  # waits up to ts + 46m
    feed.tick(T0 + 46 * MINUTE + 1)
    assert totals_rows(feed.partition.totals)["purchases"] == {("other", "unknown", "__none__"): 1}
    changes = feed.partition.take_changes()
    assert (changes["p|p1"], changes["k|p1"]) == (None, None)


# -- one jump against every value on the way ----------------------------------------------

Records = dict[tuple[str, str, int, str, str], tuple[tuple[int, ...], bool]]


class TwoPartitions:
    """Two customer partitions and the board, fed the way the validating stage does: each
    event stamped with the stream time before it, a tick to every partition after it."""

    def __init__(self, config: WindowConfig) -> None:
        self.feeds = [Feed(CustomerPartition(config)) for _ in range(2)]
        self.wire = Wire(RatesBoard(config, 2))
        self.stream_time: int | None = None
        self.records: Records = {}

    def send(self, event: Event) -> None:
        index = CUSTOMERS.index(event.customer_id) % 2
        self.feeds[index].send(event, stamp=self.stream_time)
        self.flush(index)
        self.tick(event.ts)

    def tick(self, moment: int) -> None:
        if self.stream_time is not None and moment <= self.stream_time:
            return
        self.stream_time = moment
        for index, feed in enumerate(self.feeds):
            feed.tick(moment)
            self.flush(index)

    def walk_to(self, moment: int) -> None:
        """Stream time through every value up to `moment`: everything here changes only
        one millisecond past a whole minute."""
        start = T0 if self.stream_time is None else self.stream_time
        for step in range((start - T0) // MINUTE, (moment - T0) // MINUTE):
            self.tick(T0 + step * MINUTE + 1)

    def flush(self, index: int) -> None:
        self.wire.flush(index, self.feeds[index])
        for record in self.wire.board.take_records():
            key = (record.view.name, record.label, record.start, *record.key)
            self.records[key] = (tuple(record.vector), record.final)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), config=configs, scenario=events(span_minutes=300))
def test_a_jump_gives_the_records_of_stream_time_moving_through_every_value(
    data: st.DataObject, config: WindowConfig, scenario: list[Event]
) -> None:
    arrivals = data.draw(st.permutations(scenario))
    last = max(e.ts for e in scenario)
    jump = last + config.attribution_ms + config.grace_ms + data.draw(st.integers(1, 6)) * HOUR + 1
    jumping, walking = TwoPartitions(config), TwoPartitions(config)
    for event in arrivals:
        jumping.send(event)
        walking.walk_to(event.ts)
        walking.send(event)
    jumping.tick(jump)
    walking.walk_to(jump)
    walking.tick(jump)
    # Every window is final by the jump: each key's last record is its final one.
    assert all(final for _, final in walking.records.values())
    assert jumping.records == walking.records
    for jumped, walked in zip(jumping.feeds, walking.feeds, strict=True):
        assert totals_rows(jumped.partition.totals) == totals_rows(walked.partition.totals)


# -- the worker's stages in process ---------------------------------------------------------


def _settings(grace_ms: int = 30 * MINUTE, partitions: int = 2) -> Settings:
    return Settings(
        windows=(WindowSize("10m", 10 * MINUTE), WindowSize("1h", HOUR)),
        grace_ms=grace_ms,
        attribution_window_ms=15 * MINUTE,
        partitions=partitions,
    )


def _offer(event_id: str, customer: str, ts: int, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "offer_id": f"offer-{event_id}",
        "customer_id": customer,
        "channel": "email",
        "segment": "smb",
        "ts": ts,
        **fields,
    }


def test_a_last_touch_purchase_learned_hours_later_counts_in_its_windows(
    partitions: int = 2,
) -> None:
    """Issue 18: offer at T+21m, last-touch purchase at T+23m (due at T+53m), then the
    next event at T+5h: the 10m and 1h records end final with the conversion."""
    settings_ = _settings(partitions=partitions)
    worker = InProcessWorker(settings_)
    worker.send(settings_.topic_offers, _offer("o1", "c1", T0 + 21 * MINUTE))
    worker.send(
        settings_.topic_purchases,
        {
            "event_id": "p1",
            "order_id": "r1",
            "customer_id": "c1",
            "ts": T0 + 23 * MINUTE,
            "amount": 40.0,
            "is_upsell": True,
        },
    )
    worker.send(settings_.topic_offers, _offer("o2", "c2", T0 + 5 * HOUR))
    records = worker.last_records(settings_.topic_rates)
    for window, start in (("10m", "2026-11-22T00:20:00.000Z"), ("1h", "2026-11-22T00:00:00.000Z")):
        record = records[f"{window}|{start}|email|smb"]
        assert (record["offers"], record["conversions"], record["revenue"], record["final"]) == (
            1,
            1,
            40.0,
            True,
        ), record


def test_a_duplicate_stamped_later_does_not_move_stream_time() -> None:
    """Through the validating stage: the same event_id again 90 minutes later is a
    duplicate, and the next on-time offer is not late."""
    settings_ = _settings(grace_ms=MINUTE)
    worker = InProcessWorker(settings_)
    first = _offer("o1", "c1", T0)
    worker.send(settings_.topic_offers, first)
    worker.send(settings_.topic_offers, {**first, "ts": T0 + 90 * MINUTE})
    worker.send(settings_.topic_offers, _offer("o2", "c1", T0 + MINUTE))
    partitions = worker.pipeline.partitions.values()
    assert {p.stream_time for p in partitions} == {T0 + MINUTE}
    assert sum(sum(p.totals[LATE_TOTAL].values()) for p in partitions) == 0
    assert sum(sum(p.totals["duplicates"].values()) for p in partitions) == 1
    assert sum(sum(p.totals["offers"].values()) for p in partitions) == 2


def test_a_batch_s_partials_over_several_messages_all_count(monkeypatch: Any) -> None:
    """Only a batch's last partials message moves the board's stream time: a first message
    carrying the jump would make the board drop the next ones' partials as final."""
    monkeypatch.setattr("stream_app.stages.attribute._PARTIALS_PER_MESSAGE", 1)
    # One partition: the board's low watermark is that partition's stream time.
    test_a_last_touch_purchase_learned_hours_later_counts_in_its_windows(partitions=1)
