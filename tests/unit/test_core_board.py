"""RatesBoard: partitions' partial window vectors summed into the published records.

Contract: "Output topics" (a record when a window closes, a new one each time a later
conversion changes it, `final` once stream time passed window_end + attribution) and the
`__all__` roll-ups; several workers sum to what one worker alone would report, distinct
customers included.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.domain.bands import DEFAULT_BANDS
from stream_app.domain.board import RatesBoard, WindowRecord, decode_partials, encode_partials
from stream_app.domain.cohorts import Partial
from stream_app.domain.events import Event
from stream_app.domain.partition import CustomerPartition
from stream_app.domain.views import ALL, CAMPAIGN, CHANNEL_SEGMENT, NONE, VIEWS, Key
from stream_app.domain.views import PURCHASES as PURCHASES_VIEW
from stream_app.domain.window_config import WindowConfig
from stream_app.domain.windows import is_closed
from tests.unit.conftest import (
    CONFIG,
    HOUR,
    MINUTE,
    SECOND,
    SIZES,
    T0,
    Feed,
    merge_store,
    offer,
    purchase,
    snapshot,
    totals_rows,
)
from tests.unit.test_core_partition import scenarios

BOARD = WindowConfig(sizes=SIZES, attribution_ms=10 * MINUTE, grace_ms=MINUTE)
END = T0 + 5 * MINUTE
CLOSES = END + BOARD.grace_ms + 1  # the first stream time past end + grace
FINAL = END + BOARD.attribution_ms + BOARD.grace_ms + 1
EMAIL = ("email", "smb")
SMS = ("sms", "enterprise")
CS = CHANNEL_SEGMENT.name

RecordRows = dict[tuple[str, str, int, str, str], tuple[tuple[int, ...], bool]]


class Wire:
    """The partials topic: every message is encoded and applied at the next offset."""

    def __init__(self, board: RatesBoard) -> None:
        self.board = board
        self.offset = board.next_offset
        self.sent: list[tuple[int, int | None, list[Partial]]] = []

    def send(
        self,
        partition: int,
        stream_time: int | None,
        partials: list[Partial],
        offset: int | None = None,
    ) -> None:
        message = encode_partials(partition, stream_time, partials)
        assert decode_partials(message) == (partition, stream_time, partials)
        if offset is None:
            offset = self.offset
        self.offset = max(self.offset, offset + 1)
        self.sent.append((partition, stream_time, partials))
        # As the publishing stage applies a message; `apply` (decoded partials) is the
        # same rule (test_a_message_applies_as_its_decoded_partials).
        self.board.apply_encoded(message, offset)

    def flush(self, partition: int, feed: Feed) -> None:
        """A partition's batch end: its changed vectors and stream time."""
        self.send(partition, feed.partition.stream_time, feed.partition.take_partials())


def rows(records: list[WindowRecord]) -> RecordRows:
    return {(r.view.name, r.label, r.start, *r.key): (tuple(r.vector), r.final) for r in records}


def only(view_name: str, found: RecordRows) -> dict[Any, tuple[tuple[int, ...], bool]]:
    return {key[1:]: value for key, value in found.items() if key[0] == view_name}


def two_partitions() -> tuple[Wire, list[Feed]]:
    """alice (partition 0) converts her offer; bob and carol (partition 1) do not."""
    feeds = [Feed(CustomerPartition(BOARD)) for _ in range(2)]
    feeds[0].send(offer("o1", "alice", T0 + 10 * SECOND, offer_id="A"))
    feeds[0].send(purchase("p1", "alice", T0 + MINUTE, offer_id="A", amount_micros=5))
    feeds[1].send(offer("o2", "bob", T0 + 20 * SECOND, offer_id="B"))
    feeds[1].send(
        offer("o3", "carol", T0 + 30 * SECOND, offer_id="C", channel="sms", segment="enterprise")
    )
    wire = Wire(RatesBoard(BOARD, 2))
    for i, feed in enumerate(feeds):
        wire.flush(i, feed)
    return wire, feeds


def advance(wire: Wire, feeds: list[Feed], stamp: int) -> None:
    for i, feed in enumerate(feeds):
        feed.tick(stamp)
        wire.flush(i, feed)


def test_partials_of_two_partitions_are_summed() -> None:
    wire, _ = two_partitions()
    board = wire.board
    assert board.stream_time == T0 + MINUTE
    assert board.take_records() == []  # not closed yet
    assert board.current(CHANNEL_SEGMENT, "5m") == {
        EMAIL: [2, 1, 5, 2, 1],
        SMS: [1, 0, 0, 1, 0],
        ("email", ALL): [2, 1, 5, 2, 1],
        ("sms", ALL): [1, 0, 0, 1, 0],
        (ALL, "smb"): [2, 1, 5, 2, 1],
        (ALL, "enterprise"): [1, 0, 0, 1, 0],
        (ALL, ALL): [3, 1, 5, 3, 1],
    }
    assert board.current(CHANNEL_SEGMENT, "1h")[(ALL, ALL)] == [3, 1, 5, 3, 1]
    assert board.current(CAMPAIGN, "5m")[(NONE, NONE)] == [3, 1, 5, 3, 1]
    # alice's purchase: one upsell transaction of 5 micro-units.
    assert board.current(PURCHASES_VIEW, "5m")[(ALL, ALL)] == [1, 0, 5, 0, 1, 1]


def test_life_cycle_close_change_final_gone() -> None:
    wire, feeds = two_partitions()
    board = wire.board
    advance(wire, feeds, END + BOARD.grace_ms)  # end + grace not yet passed
    assert board.take_records() == []

    advance(wire, feeds, CLOSES)
    closed = rows(board.take_records())
    assert only(CS, closed) == {
        ("5m", T0, *EMAIL): ((2, 1, 5, 2, 1), False),
        ("5m", T0, *SMS): ((1, 0, 0, 1, 0), False),
        ("5m", T0, "email", ALL): ((2, 1, 5, 2, 1), False),
        ("5m", T0, "sms", ALL): ((1, 0, 0, 1, 0), False),
        ("5m", T0, ALL, "smb"): ((2, 1, 5, 2, 1), False),
        ("5m", T0, ALL, "enterprise"): ((1, 0, 0, 1, 0), False),
        ("5m", T0, ALL, ALL): ((3, 1, 5, 3, 1), False),
    }
    assert set(only(CAMPAIGN.name, closed)) == {
        ("5m", T0, NONE, NONE),
        ("5m", T0, NONE, ALL),
        ("5m", T0, ALL, NONE),
        ("5m", T0, ALL, ALL),
    }
    assert only(PURCHASES_VIEW.name, closed)[("5m", T0, ALL, ALL)] == ((1, 0, 5, 0, 1, 1), False)
    assert board.take_records() == []

    # bob converts after the close: records for the changed keys (and roll-ups) only.
    feeds[1].send(purchase("p2", "bob", CLOSES, offer_id="B", amount_micros=4))
    wire.flush(1, feeds[1])
    changed = rows(board.take_records())
    assert only(CS, changed) == {
        ("5m", T0, *EMAIL): ((2, 2, 9, 2, 2), False),
        ("5m", T0, "email", ALL): ((2, 2, 9, 2, 2), False),
        ("5m", T0, ALL, "smb"): ((2, 2, 9, 2, 2), False),
        ("5m", T0, ALL, ALL): ((3, 2, 9, 3, 2), False),
    }
    assert set(only(CAMPAIGN.name, changed)) == {
        ("5m", T0, NONE, NONE),
        ("5m", T0, NONE, ALL),
        ("5m", T0, ALL, NONE),
        ("5m", T0, ALL, ALL),
    }
    assert only(PURCHASES_VIEW.name, changed) == {}  # bob's purchase is in an open window
    assert board.take_records() == []

    advance(wire, feeds, FINAL - 1)  # end + attribution + grace not yet passed
    assert all(key[1:3] != ("5m", T0) for key in rows(board.take_records()))
    advance(wire, feeds, FINAL)
    final = rows(board.take_records())
    five = {key: value for key, value in final.items() if key[1:3] == ("5m", T0)}
    assert only(CS, five) == {
        ("5m", T0, *EMAIL): ((2, 2, 9, 2, 2), True),
        ("5m", T0, *SMS): ((1, 0, 0, 1, 0), True),
        ("5m", T0, "email", ALL): ((2, 2, 9, 2, 2), True),
        ("5m", T0, "sms", ALL): ((1, 0, 0, 1, 0), True),
        ("5m", T0, ALL, "smb"): ((2, 2, 9, 2, 2), True),
        ("5m", T0, ALL, "enterprise"): ((1, 0, 0, 1, 0), True),
        ("5m", T0, ALL, ALL): ((3, 2, 9, 3, 2), True),
    }
    assert {key[0] for key in five} == {view.name for view in VIEWS}
    # Then the window is gone: nothing more, and late partials for it are ignored.
    assert board.take_records() == []
    assert board.window(CHANNEL_SEGMENT, ("5m", T0)) == {}
    assert board.retained(CHANNEL_SEGMENT, "5m") == []
    assert board.retained(PURCHASES_VIEW, "5m") == [T0 + 5 * MINUTE]  # bob's purchase
    wire.send(0, FINAL, [Partial(CS, "5m", T0, EMAIL, [9, 9, 9, 9, 9])])
    assert board.take_records() == []
    assert board.window(CHANNEL_SEGMENT, ("5m", T0)) == {}
    changes = board.take_changes()
    assert changes['w|["channel_segment","5m",1795305600000]'] is None


def test_record_json() -> None:
    wire, feeds = two_partitions()
    advance(wire, feeds, CLOSES)
    by_key = {r.topic_key: r for r in wire.board.take_records()}
    record = by_key["5m|2026-11-22T00:00:00.000Z|__all__|__all__"]
    assert record.as_json(DEFAULT_BANDS, T0 + HOUR) == {
        "window": "5m",
        "window_start": "2026-11-22T00:00:00.000Z",
        "window_end": "2026-11-22T00:05:00.000Z",
        "channel": ALL,
        "segment": ALL,
        "offers": 3,
        "conversions": 1,
        "rate": 1 / 3,
        "revenue": 5 / 1_000_000,
        "customers_targeted": 3,
        "customers_upsold": 1,
        "customer_rate": 1 / 3,
        "band": "excellent",
        "final": False,
        "emitted_at": "2026-11-22T01:00:00.000Z",
    }
    kpi = by_key["purchases|5m|2026-11-22T00:00:00.000Z|__all__|__all__"].as_json(DEFAULT_BANDS, T0)
    assert kpi["view"] == "purchases"
    assert (kpi["purchases"], kpi["transaction_rate"], kpi["aov_uplift"]) == (1, 1.0, None)
    empty = WindowRecord(CHANNEL_SEGMENT, "1h", T0, T0 + HOUR, EMAIL, [0, 0, 0, 0, 0], True)
    assert empty.as_json(DEFAULT_BANDS, T0)["rate"] is None
    assert empty.as_json(DEFAULT_BANDS, T0)["band"] is None
    assert empty.topic_key == "1h|2026-11-22T00:00:00.000Z|email|smb"


def test_stream_time_is_the_largest_and_the_low_watermark_the_smallest() -> None:
    wire = Wire(RatesBoard(BOARD, 2))
    assert wire.board.stream_time is None
    wire.send(0, T0 + HOUR, [])
    assert watermarks(wire.board) == (T0 + HOUR, None)  # partition 1 has not reported
    wire.send(1, T0, [])
    wire.send(0, T0, [])  # never goes back
    wire.send(1, None, [])
    assert watermarks(wire.board) == (T0 + HOUR, T0)


def watermarks(board: RatesBoard) -> tuple[int | None, int | None]:
    return board.stream_time, board.low_watermark


def test_a_lagging_partition_holds_windows_open() -> None:
    wire = Wire(RatesBoard(BOARD, 2))
    ahead = [Partial(CS, "5m", T0, EMAIL, [1, 0, 0, 1, 0])]
    wire.send(0, FINAL, ahead)
    assert wire.board.take_records() == []  # partition 1 has not reported
    wire.send(1, T0 + MINUTE, [Partial(CS, "5m", T0, EMAIL, [2, 1, 3, 2, 1])])
    assert wire.board.take_records() == []  # partition 1 is behind: not closed
    wire.send(1, CLOSES, [])
    assert rows(wire.board.take_records())[(CS, "5m", T0, *EMAIL)] == ((3, 1, 3, 3, 1), False)
    wire.send(1, FINAL, [])
    assert rows(wire.board.take_records())[(CS, "5m", T0, *EMAIL)] == ((3, 1, 3, 3, 1), True)


def test_a_partition_s_last_counts_arrive_with_the_stream_time_that_finalizes_them() -> None:
    # An idle tick moves every partition past a window's end + attribution + grace, and
    # the partition holding the window's last counts sends them with that stream time.
    wire = Wire(RatesBoard(BOARD, 2))
    wire.send(1, FINAL, [])
    wire.send(0, FINAL, [Partial(CS, "5m", T0, EMAIL, [1, 0, 0, 1, 0])])
    assert rows(wire.board.take_records())[(CS, "5m", T0, *EMAIL)] == ((1, 0, 0, 1, 0), True)
    # Once published final, the window is gone: later counts for it are late, ignored.
    wire.send(0, FINAL, [Partial(CS, "5m", T0, EMAIL, [2, 0, 0, 2, 0])])
    assert wire.board.take_records() == []


def test_replayed_partials_change_no_counts() -> None:
    wire, feeds = two_partitions()
    advance(wire, feeds, CLOSES)
    first = rows(wire.board.take_records())
    history = list(wire.sent)
    # The same messages again at their old offsets: ignored outright.
    for offset, message in enumerate(history):
        wire.send(*message, offset=offset)
    assert wire.board.take_records() == []
    # Re-sent at new offsets (a partition restarted): the counts stay the same.
    for message in history:
        wire.send(*message)
    again = rows(wire.board.take_records())
    assert all(again[key] == first[key] for key in again)
    advance(wire, feeds, FINAL)
    final = {
        key: value[0]
        for key, value in rows(wire.board.take_records()).items()
        if key[1:3] == ("5m", T0)
    }
    assert final == {key: value[0] for key, value in first.items()}


def test_replayed_partials_publish_nothing_new() -> None:
    # A record after the close only when a key's vector changed, not for a re-sent one.
    wire, feeds = two_partitions()
    advance(wire, feeds, CLOSES)
    wire.board.take_records()
    for message in list(wire.sent):
        wire.send(*message)
    assert wire.board.take_records() == []


def test_restore_round_trip() -> None:
    original, feeds = two_partitions()
    store: dict[str, Any] = {}
    merge_store(store, original.board.take_changes())
    advance(original, feeds, CLOSES)
    assert original.board.take_records() != []
    merge_store(store, original.board.take_changes())

    restored = Wire(RatesBoard.restore(BOARD, 2, copy.deepcopy(store)))
    assert restored.board.next_offset == original.board.next_offset
    assert restored.board.stream_time == original.board.stream_time
    assert restored.board.take_records() == []  # already announced
    feeds[1].send(purchase("p2", "bob", CLOSES, offer_id="B", amount_micros=4))
    partials = feeds[1].partition.take_partials()
    for wire in (original, restored):
        wire.send(1, feeds[1].partition.stream_time, partials)
    assert rows(original.board.take_records()) == rows(restored.board.take_records()) != {}
    for wire in (original, restored):
        wire.send(0, FINAL, [])
        wire.send(1, FINAL, [])
    assert rows(original.board.take_records()) == rows(restored.board.take_records()) != {}


def test_restore_before_announcing() -> None:
    original, feeds = two_partitions()
    advance(original, feeds, CLOSES)
    restored = Wire(RatesBoard.restore(BOARD, 2, original.board.take_changes()))
    assert rows(restored.board.take_records()) == rows(original.board.take_records()) != {}


# -- properties ------------------------------------------------------------------------


@st.composite
def partials(draw: st.DrawFn) -> Partial:
    view = draw(st.sampled_from([CHANNEL_SEGMENT, PURCHASES_VIEW]))
    label, size = draw(st.sampled_from(SIZES))
    key = (draw(st.sampled_from(["a", "b", ALL])), draw(st.sampled_from(["x", ALL])))
    vector = draw(
        st.lists(st.integers(0, 10**6), min_size=len(view.fields), max_size=len(view.fields))
    )
    return Partial(view.name, label, T0 + draw(st.integers(-1, 3)) * size, key, vector)


@settings(max_examples=100, deadline=None)
@given(
    partition=st.integers(0, 64),
    stream_time=st.none() | st.integers(-(10**15), 10**15),
    items=st.lists(partials(), max_size=6),
)
def test_encode_decode_partials_round_trip(
    partition: int, stream_time: int | None, items: list[Partial]
) -> None:
    assert decode_partials(encode_partials(partition, stream_time, items)) == (
        partition,
        stream_time,
        items,
    )


messages = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.integers(0, 40).map(lambda k: T0 + k * MINUTE),
        st.lists(partials(), max_size=3),
        st.booleans(),  # take_records after this message
    ),
    max_size=16,
)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), sent=messages)
def test_records_are_sums_of_the_latest_partials_and_restore_changes_nothing(
    data: st.DataObject, sent: list[tuple[int, int, list[Partial], bool]]
) -> None:
    restart_at = data.draw(st.integers(0, len(sent)), label="restart_at")
    original = Wire(RatesBoard(BOARD, 3))
    store: dict[str, Any] = {}
    latest: dict[tuple[str, str, int, Key], dict[int, list[int]]] = {}
    restored: Wire | None = None
    for i, (partition, stream_time, items, take) in enumerate(sent):
        if i == restart_at:
            restored = Wire(RatesBoard.restore(BOARD, 3, copy.deepcopy(store)))
        before = original.board.low_watermark
        for wire in filter(None, (original, restored)):
            wire.send(partition, stream_time, items)
        for p in items:
            if not BOARD.is_final((p.label, p.start), before):
                latest.setdefault((p.view, p.label, p.start, p.key), {})[partition] = p.vector
        if take:
            records = original.board.take_records()
            if restored is not None:
                assert rows(restored.board.take_records()) == rows(records)
            for record in records:
                parts = latest[(record.view.name, record.label, record.start, record.key)]
                assert record.vector == [
                    sum(column) for column in zip(*parts.values(), strict=True)
                ]
                assert record.final == BOARD.is_final(
                    (record.label, record.start), original.board.low_watermark
                )
                assert is_closed(record.end, original.board.low_watermark, BOARD.grace_ms)
                assert record.end - record.start == dict(SIZES)[record.label]
            for record in records:
                if record.final:
                    for key in [
                        k for k in latest if k[:3] == (record.view.name, record.label, record.start)
                    ]:
                        del latest[key]
        merge_store(store, original.board.take_changes())
        if restored is not None:
            restored.board.take_changes()
    if restored is not None:
        assert rows(restored.board.take_records()) == rows(original.board.take_records())


@settings(max_examples=100, deadline=None)
@given(sent=messages, replay_from=st.integers(0, 16))
def test_a_message_applies_as_its_decoded_partials(
    sent: list[tuple[int, int, list[Partial], bool]], replay_from: int
) -> None:
    """`apply_encoded` (the publishing stage's way) and `apply` of the decoded partials
    leave two boards alike: the same records, the same changes to store; a message read
    again (an offset before the board's next) changes neither."""
    encoded, decoded = RatesBoard(BOARD, 3), RatesBoard(BOARD, 3)
    offsets = list(range(len(sent))) + list(range(replay_from, len(sent)))
    for offset in offsets:
        partition, stream_time, items, take = sent[offset]
        message = encode_partials(partition, stream_time, items)
        encoded.apply_encoded(message, offset)
        decoded.apply(*decode_partials(message), offset)
        if take:
            assert rows(encoded.take_records()) == rows(decoded.take_records())
        assert encoded.take_changes() == decoded.take_changes()
    assert rows(encoded.take_records()) == rows(decoded.take_records())


# -- several partitions sum to one -----------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    data=st.data(),
    scenario=scenarios(
        slots=36, slot_ms=5 * MINUTE, max_offers=10, max_purchases=10, foreign_named_upsell=True
    ),
)
def test_partitions_sum_to_what_one_partition_counts(data: st.DataObject, scenario: Any) -> None:
    arrival: list[Event] = data.draw(st.permutations(scenario.events + scenario.duplicates))
    placement = data.draw(
        st.fixed_dictionaries({c: st.integers(0, 2) for c in ("alice", "bob", "carol")}),
        label="placement",
    )
    single = Feed(CustomerPartition(CONFIG))
    split = [Feed(CustomerPartition(CONFIG)) for _ in range(3)]
    one, many = Wire(RatesBoard(CONFIG, 1)), Wire(RatesBoard(CONFIG, 3))
    # As the validating stage stamps them: the stream time before each item.
    stamp: int | None = None
    for i, event in enumerate(arrival):
        single.send(event, stamp=stamp)
        split[placement[event.customer_id]].send(event, stamp=stamp)
        stamp = event.ts if stamp is None else max(stamp, event.ts)
        if i % 3 == 2:  # batch ends now and then
            one.flush(0, single)
            for k, feed in enumerate(split):
                many.flush(k, feed)
    end = T0 + 4 * HOUR  # decides every last-touch purchase, closes every window
    for feed in (single, *split):
        feed.tick(end)
    one.flush(0, single)
    for k, feed in enumerate(split):
        many.flush(k, feed)

    expected_totals, expected_windows = snapshot(single.partition)
    summed_totals: dict[str, dict[tuple[str, ...], int]] = {}
    summed_windows: dict[Any, dict[Key, list[int]]] = {}
    for feed in split:
        totals, windows = snapshot(feed.partition)
        for name, counter in totals.items():
            target = summed_totals.setdefault(name, {})
            for key, n in counter.items():
                target[key] = target.get(key, 0) + n
        for slot, cells in windows.items():
            for key, vec in cells.items():
                acc = summed_windows.setdefault(slot, {}).setdefault(key, [0] * len(vec))
                for index, n in enumerate(vec):
                    acc[index] += n
    assert summed_totals == expected_totals
    assert {
        slot: {key: tuple(v) for key, v in cells.items()} for slot, cells in summed_windows.items()
    } == expected_windows
    assert totals_rows(single.partition.totals) == expected_totals
    # Through the boards: the same records either way, distinct customers included.
    assert rows(one.board.take_records()) == rows(many.board.take_records())


def test_purchase_naming_another_customers_offer_counts_the_same_in_any_partitioning() -> None:
    events: list[Event] = [
        offer("o1", "alice", T0, offer_id="A"),
        purchase("p1", "bob", T0 + MINUTE, offer_id="A", is_upsell=False, amount_micros=3),
    ]
    single = Feed(CustomerPartition(CONFIG))
    split = {"alice": Feed(CustomerPartition(CONFIG)), "bob": Feed(CustomerPartition(CONFIG))}
    for event in events:
        single.send(event)
        split[event.customer_id].send(event)
    for feed in (single, *split.values()):
        feed.tick(T0 + HOUR)
    summed: dict[tuple[str, ...], int] = {}
    for feed in split.values():
        for key, n in totals_rows(feed.partition.totals)["purchases"].items():
            summed[key] = summed.get(key, 0) + n
    assert summed == totals_rows(single.partition.totals)["purchases"]
